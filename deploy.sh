#!/usr/bin/env bash
# Deploys workflows-runner to a Google Cloud project with gcloud, and schedules workflows
# through its proxy. Safe to run again: it looks before it creates and skips what exists.
# Written for bash 3.2+ (macOS) as well as Cloud Shell and Cloud Build. See --help.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage:
  ./deploy.sh [--project P] --region R [--prefix NAME] [--allowed-workflows LIST] [--dry-run]
  ./deploy.sh schedule WORKFLOW --schedule CRON --time-zone TZ [--body JSON]
              [--project P] --region R [--prefix NAME] [--dry-run]

Deploy (the first form) enables the APIs, creates the service accounts and their roles,
deploys the range and proxy functions (2nd gen, private) and the backfill workflow.

schedule creates or updates the Cloud Scheduler job PREFIX-WORKFLOW that starts WORKFLOW
through the proxy, so that each run receives its scheduled time. WORKFLOW is a workflow name
in the same project and region, or projects/P/locations/L/workflows/W.

Options:
  --project P              Google Cloud project (default: gcloud config get-value project)
  --region R               region of the functions, workflow and jobs, e.g. europe-west1
  --prefix NAME            prefix of every resource name (default: workflows-runner;
                           lowercase letters, digits and hyphens, at most 20 characters)
  --allowed-workflows LIST workflows the proxy may start: comma-separated
                           project/location/workflow, '*' per segment (default: P/R/*)
  --schedule CRON          unix-cron schedule of the job, e.g. '0 1 * * *'
  --time-zone TZ           IANA time zone of the schedule and of the scheduled times
                           the workflow receives, e.g. Europe/Stockholm
  --body JSON              the workflow's argument, a JSON object (default: {})
  --dry-run                print the gcloud commands that would change something, run
                           only read-only lookups
  -h, --help               show this help
EOF
}

readonly RUNTIME=python312
readonly APIS="cloudresourcemanager.googleapis.com iam.googleapis.com cloudfunctions.googleapis.com run.googleapis.com cloudbuild.googleapis.com artifactregistry.googleapis.com workflows.googleapis.com workflowexecutions.googleapis.com cloudscheduler.googleapis.com logging.googleapis.com"
# Scheduler retries are safe: the proxy starts one execution per scheduled time.
readonly JOB_RETRY_FLAGS="--attempt-deadline=180s --max-retry-attempts=5 --min-backoff=30s --max-backoff=600s"
# New service accounts can take a minute to be usable in IAM policies.
readonly RETRY_SECONDS=${DEPLOY_RETRY_SECONDS:-10}

COMMAND=deploy PROJECT="" REGION="" PREFIX=workflows-runner ALLOWED="" DRY_RUN=0
WORKFLOW="" SCHEDULE="" TIME_ZONE="" BODY="{}"

die() { printf 'deploy.sh: %s\n' "$*" >&2; exit 1; }
say() { printf '%s\n' "$*"; }

# The words of a command as a shell would need them, single-quoted where necessary.
quoted() {
  local out="" word quote="'" escaped="'\\''"
  for word in "$@"; do
    if [[ ! $word =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then
      word=${word//$quote/$escaped}
      word="'$word'"
    fi
    out="$out $word"
  done
  printf '%s' "${out# }"
}

# A gcloud call that changes something: shown, then run unless --dry-run.
run() {
  if ((DRY_RUN)); then say "[dry-run] $(quoted gcloud "$@")"; return 0; fi
  say "+ $(quoted gcloud "$@")"
  gcloud "$@"
}

# A read-only gcloud call: runs even with --dry-run, its errors mean "not there".
lookup() {
  if ((DRY_RUN)); then say "[dry-run, read-only, runs] $(quoted gcloud "$@")" >&2; fi
  gcloud "$@" 2>/dev/null
}

retry() {
  local attempt=1
  until "$@"; do
    ((attempt < 5)) || return 1
    say "  retrying in $((attempt * RETRY_SECONDS))s (IAM changes take a moment to propagate)"
    sleep $((attempt * RETRY_SECONDS))
    attempt=$((attempt + 1))
  done
}

parse_args() {
  if [[ ${1:-} == schedule ]]; then COMMAND=schedule; shift; fi
  local arg value
  while (($#)); do
    arg=$1; shift
    case $arg in --*=*) set -- "${arg#*=}" "$@"; arg=${arg%%=*} ;; esac
    case $arg in
      -h | --help) usage; exit 0 ;;
      --dry-run) DRY_RUN=1 ;;
      --project | --region | --prefix | --allowed-workflows | --schedule | --time-zone | --body)
        (($#)) || die "$arg needs a value (see --help)"
        value=$1; shift
        case $arg in
          --project) PROJECT=$value ;;
          --region) REGION=$value ;;
          --prefix) PREFIX=$value ;;
          --allowed-workflows) only_for deploy "$arg"; ALLOWED=$value ;;
          --schedule) only_for schedule "$arg"; SCHEDULE=$value ;;
          --time-zone) only_for schedule "$arg"; TIME_ZONE=$value ;;
          --body) only_for schedule "$arg"; BODY=$value ;;
        esac ;;
      -*) die "unknown option: $arg (see --help)" ;;
      *)
        [[ $COMMAND == schedule && -z $WORKFLOW ]] ||
          die "unexpected argument: $arg (schedule comes first: ./deploy.sh schedule WORKFLOW ...)"
        WORKFLOW=$arg ;;
    esac
  done
}

only_for() {
  [[ $COMMAND == "$1" ]] || die "$2 only applies to the $1 command (see --help)"
}

check_inputs() {
  [[ -n $REGION ]] || die "--region is required, e.g. --region us-central1"
  [[ $REGION =~ ^[a-z][a-z0-9-]*[0-9]$ ]] || die "invalid region: $REGION"
  [[ $PREFIX =~ ^[a-z]([a-z0-9-]*[a-z0-9])?$ ]] ||
    die "invalid prefix '$PREFIX': use lowercase letters, digits and hyphens, starting with a letter"
  # Service account ids are 6-30 characters and the longest is PREFIX-scheduler.
  ((${#PREFIX} <= 20)) ||
    die "prefix '$PREFIX' is too long: service account id '$PREFIX-scheduler' would exceed 30 characters; use at most 20"
  if [[ $COMMAND == schedule ]]; then
    [[ -n $WORKFLOW ]] || die "schedule needs a WORKFLOW (see --help)"
    [[ -n $SCHEDULE ]] || die "schedule needs --schedule CRON, e.g. --schedule '0 1 * * *'"
    [[ -n $TIME_ZONE ]] || die "schedule needs --time-zone TZ, e.g. --time-zone Etc/UTC"
    [[ $TIME_ZONE =~ ^[A-Za-z0-9_+/-]+$ ]] || die "invalid time zone: $TIME_ZONE"
    [[ $BODY =~ ^[[:space:]]*\{.*\}[[:space:]]*$ ]] || die "--body must be a JSON object, e.g. '{\"table\": \"sales\"}'"
  else
    local need
    for need in functions/range/main.py functions/proxy/main.py workflows/backfill.yaml; do
      [[ -f $need ]] || die "$need is missing: run deploy.sh from a complete checkout"
    done
  fi
}

preflight() {
  command -v gcloud >/dev/null 2>&1 ||
    die "gcloud not found on PATH: install the Google Cloud CLI (https://cloud.google.com/sdk/docs/install)"
  ACCOUNT=$(gcloud auth list --filter=status:ACTIVE --format='value(account)' 2>/dev/null) || ACCOUNT=""
  [[ -n $ACCOUNT ]] || die "gcloud is not logged in: run 'gcloud auth login' (or use a service account)"
  if [[ -z $PROJECT ]]; then
    PROJECT=$(gcloud config get-value project 2>/dev/null) || PROJECT=""
  fi
  [[ -n $PROJECT ]] || die "no project: pass --project P or run 'gcloud config set project P'"
}

set_names() {
  SA_RANGE=$PREFIX-range SA_PROXY=$PREFIX-proxy SA_SCHEDULER=$PREFIX-scheduler SA_BACKFILL=$PREFIX-backfill
  FN_RANGE=$PREFIX-range FN_PROXY=$PREFIX-proxy WF_BACKFILL=$PREFIX-backfill
}

email() { printf '%s@%s.iam.gserviceaccount.com' "$1" "$PROJECT"; }
member() { printf 'serviceAccount:%s' "$(email "$1")"; }

enable_apis() {
  local enabled missing="" api
  enabled=$(lookup services list --enabled --project="$PROJECT" --format='value(config.name)') || enabled=""
  enabled=" ${enabled//$'\n'/ } "
  for api in $APIS; do
    [[ $enabled == *" $api "* ]] || missing="$missing $api"
  done
  if [[ -z $missing ]]; then say "= APIs already enabled"; return; fi
  # shellcheck disable=SC2086 # one word per API
  run services enable $missing --project="$PROJECT"
}

ensure_service_account() {
  if lookup iam service-accounts describe "$(email "$1")" --project="$PROJECT" --format='value(email)' >/dev/null; then
    say "= service account $(email "$1") exists"
  else
    run iam service-accounts create "$1" --project="$PROJECT" --display-name="$2"
  fi
}

# policy_has ROLE MEMBER GET-IAM-POLICY-COMMAND...
policy_has() {
  local role=$1 who=$2 found
  shift 2
  found=$(lookup "$@" --flatten='bindings[].members' \
    --filter="bindings.role=$role AND bindings.members=$who" --format='value(bindings.role)') || return 1
  [[ -n $found ]]
}

grant_project_role() {
  if policy_has "$2" "$(member "$1")" projects get-iam-policy "$PROJECT"; then
    say "= $1 has $2 on the project"
  else
    retry run projects add-iam-policy-binding "$PROJECT" --member="$(member "$1")" --role="$2" \
      --condition=None --format=none
  fi
}

grant_invoker() {
  if policy_has roles/run.invoker "$(member "$2")" run services get-iam-policy "$1" --region="$REGION" --project="$PROJECT"; then
    say "= $2 may invoke $1"
  else
    retry run functions add-invoker-policy-binding "$1" --region="$REGION" --project="$PROJECT" \
      --member="$(member "$2")"
  fi
}

function_url() {
  local url
  url=$(lookup functions describe "$1" --region="$REGION" --project="$PROJECT" --format='value(serviceConfig.uri)') || url=""
  if [[ -z $url ]]; then
    ((DRY_RUN)) || return 1
    url="https://$1.example.invalid" # not deployed yet: a placeholder for the printed plan
  fi
  printf '%s' "$url"
}

deploy_function() { # NAME SOURCE ENTRY-POINT SERVICE-ACCOUNT FLAG...
  run functions deploy "$1" --gen2 --region="$REGION" --project="$PROJECT" --runtime="$RUNTIME" \
    --source="$2" --entry-point="$3" --trigger-http --no-allow-unauthenticated \
    --service-account="$(email "$4")" "${@:5}" --quiet
}

deploy() {
  ALLOWED=${ALLOWED:-$PROJECT/$REGION/*}
  local segment='[^/,;[:space:]]+' entry
  entry="$segment/$segment/$segment"
  [[ $ALLOWED =~ ^$entry(,$entry)*$ ]] ||
    die "invalid --allowed-workflows '$ALLOWED': comma-separated project/location/workflow, '*' per segment"
  say "Deploying workflows-runner to project $PROJECT, region $REGION, prefix $PREFIX (as $ACCOUNT)"
  enable_apis
  ensure_service_account "$SA_RANGE" "workflows-runner range function"
  ensure_service_account "$SA_PROXY" "workflows-runner proxy function"
  ensure_service_account "$SA_SCHEDULER" "workflows-runner Cloud Scheduler jobs"
  ensure_service_account "$SA_BACKFILL" "workflows-runner backfill workflow"
  # Workflows roles can only be granted on the project.
  grant_project_role "$SA_PROXY" roles/workflows.invoker
  # The backfill waits on runs (executions.get) and, near the step limit, starts its own
  # continuation (README, backfill "Limits"): roles/workflows.invoker holds both.
  grant_project_role "$SA_BACKFILL" roles/workflows.invoker
  grant_project_role "$SA_BACKFILL" roles/logging.logWriter

  deploy_function "$FN_RANGE" functions/range expand_range "$SA_RANGE" --clear-env-vars
  # ^;^ makes ';' the list separator: ALLOWED_WORKFLOWS itself contains commas. The timeout
  # outlasts the proxy's own 60 s upstream deadline, so it answers a clean 503 first.
  deploy_function "$FN_PROXY" functions/proxy proxy "$SA_PROXY" \
    "--set-env-vars=^;^GOOGLE_CLOUD_PROJECT=$PROJECT;ALLOWED_WORKFLOWS=$ALLOWED" --timeout=120s
  local range_url proxy_url
  range_url=$(function_url "$FN_RANGE") || die "could not read the URL of $FN_RANGE"
  proxy_url=$(function_url "$FN_PROXY") || die "could not read the URL of $FN_PROXY"

  grant_invoker "$FN_RANGE" "$SA_BACKFILL"
  grant_invoker "$FN_PROXY" "$SA_BACKFILL"
  grant_invoker "$FN_PROXY" "$SA_SCHEDULER"

  run workflows deploy "$WF_BACKFILL" --location="$REGION" --project="$PROJECT" \
    --source=workflows/backfill.yaml --service-account="$(email "$SA_BACKFILL")" \
    --set-env-vars="RANGE_URL=$range_url,PROXY_URL=$proxy_url" --quiet

  if ((DRY_RUN)); then say "Dry run: nothing was changed."; fi
  cat <<EOF

workflows-runner is deployed in $PROJECT ($REGION):
  range function    $FN_RANGE  $range_url
  proxy function    $FN_PROXY  $proxy_url  (may start: $ALLOWED)
  backfill workflow $WF_BACKFILL

Schedule one of your workflows through the proxy:
  ./deploy.sh schedule MY_WORKFLOW --schedule '0 1 * * *' --time-zone Etc/UTC --project $PROJECT --region $REGION --prefix $PREFIX

Start a backfill (one run per scheduled time in [start, stop), skipping times that already ran):
  gcloud workflows run $WF_BACKFILL --location=$REGION --project=$PROJECT \\
    --data='{"workflow": "MY_WORKFLOW", "start": "2024-03-01T00:00:00Z", "stop": "2024-07-01T00:00:00Z", "step": "0 1 * * *", "concurrency": 5}'
EOF
}

schedule() {
  local project=$PROJECT location=$REGION name=$WORKFLOW
  if [[ $WORKFLOW =~ ^projects/([^/]+)/locations/([^/]+)/workflows/([^/]+)$ ]]; then
    project=${BASH_REMATCH[1]} location=${BASH_REMATCH[2]} name=${BASH_REMATCH[3]}
  fi
  [[ $name =~ ^[A-Za-z][A-Za-z0-9_-]{0,63}$ ]] || die "invalid workflow name: $name"
  local proxy_url
  proxy_url=$(function_url "$FN_PROXY") || die "$FN_PROXY is not deployed in $PROJECT/$REGION: run ./deploy.sh first"
  local job=$PREFIX-$name
  # '+' in a query string means a space: Etc/GMT+5 must be sent as Etc/GMT%2B5.
  local uri="$proxy_url/v1/projects/$project/locations/$location/workflows/$name/executions?timezone=${TIME_ZONE//+/%2B}"
  local verb=create headers=--headers
  if lookup scheduler jobs describe "$job" --location="$REGION" --project="$PROJECT" --format='value(name)' >/dev/null; then
    verb=update headers=--update-headers
  fi
  # shellcheck disable=SC2086 # JOB_RETRY_FLAGS is a list of flags
  run scheduler jobs "$verb" http "$job" --location="$REGION" --project="$PROJECT" \
    --schedule="$SCHEDULE" --time-zone="$TIME_ZONE" --uri="$uri" --http-method=post \
    "$headers=Content-Type=application/json" --message-body="$BODY" \
    --oidc-service-account-email="$(email "$SA_SCHEDULER")" --oidc-token-audience="$proxy_url" \
    $JOB_RETRY_FLAGS --quiet
  if ((DRY_RUN)); then say "Dry run: nothing was changed."; fi
  say "Scheduler job $job (${verb}d) starts $project/$location/$name at '$SCHEDULE' ($TIME_ZONE) through $proxy_url"
}

main() {
  parse_args "$@"
  # Paths below are relative to the checkout; no external command may run before preflight.
  local here=${BASH_SOURCE[0]%/*}
  [[ $here != "${BASH_SOURCE[0]}" ]] || here=.
  cd "$here"
  check_inputs
  preflight
  set_names
  "$COMMAND"
}

main "$@"
