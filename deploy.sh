#!/usr/bin/env bash
# Deploys workflows-runner to a Google Cloud project with gcloud, schedules workflows through its
# proxy, migrates existing Scheduler jobs to it, and tears it all down again. Safe to run again:
# it looks before it creates or deletes and skips what is already done.
# Written for bash 3.2+ (macOS) as well as Cloud Shell and Cloud Build. See --help and docs/deploy.md.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage:
  ./deploy.sh [deploy] [--project P] --region R [--prefix NAME] [--allowed-workflows LIST]
              [--operators LIST] [--build-service-account EMAIL]
              [--notification-channels LIST] [--dry-run]
  ./deploy.sh schedule WORKFLOW [--job NAME] --schedule CRON --time-zone TZ [--body JSON]
              [--catch-up DURATION] [--overlap MODE [--max-active N]] [--pause-after N]
              [--deadline DURATION] [--since T] [--grace DURATION] [--lookback DURATION]
              [--project P] --region R [--prefix NAME] [--dry-run]
  ./deploy.sh unschedule NAME [--project P] --region R [--prefix NAME] [--dry-run]
  ./deploy.sh jobs [--project P] --region R [--prefix NAME]
  ./deploy.sh migrate JOB [--project P] --region R [--prefix NAME] [--dry-run]
  ./deploy.sh destroy [--delete-runs] [--project P] --region R [--prefix NAME] [--dry-run]

deploy      enables the APIs, creates the service accounts and their roles, the runs bucket
            PROJECT-PREFIX-runs, the range, proxy and audit functions (2nd gen, private), the
            backfill and queue workflows, the job PREFIX-audit running an audit pass every 5 minutes, the
            log-based metric PREFIX-alerts and, with --notification-channels, an alert policy.
schedule    creates or updates the Cloud Scheduler job PREFIX-NAME that starts WORKFLOW through
            the proxy, so that each run receives its scheduled time. WORKFLOW is a workflow id in
            the same project and region, or projects/P/locations/L/workflows/W. A workflow may
            have many jobs, each with its own NAME, body, schedule and zone.
            --catch-up P7D also keeps the daily job PREFIX-NAME-catch-up, which starts a backfill
            of the last 7 days with reprocess none: missed times run without anyone asking.
unschedule  deletes the job PREFIX-NAME and its catch-up job.
jobs        lists the jobs that start workflows through the proxy, with their next run.
migrate     points an existing Scheduler job that calls the Workflows Executions API at the
            proxy instead, keeping its schedule, zone, retry settings and body.
destroy     removes what deploy created: jobs, workflows, functions, bindings, then the service
            accounts. The runs bucket stays unless --delete-runs.

Options:
  --project P              Google Cloud project (default: gcloud config get-value project)
  --region R               region of the functions, workflow, bucket and jobs, e.g. europe-west1
  --prefix NAME            prefix of every resource name (default: workflows-runner;
                           lowercase letters, digits and hyphens, at most 20 characters)
  --allowed-workflows LIST workflows the proxy may start: comma-separated
                           project/location/workflow, '*' per segment (default: P/R/*)
  --operators LIST         principals who run wfr (status, backfills, re-runs, resume, wfr ui): they get
                           what every wfr command needs (docs/deploy.md, "Least privilege"),
                           e.g. user:ana@example.com,group:ops@example.com
  --build-service-account EMAIL
                           the service account Cloud Build uses to build the functions
                           (default: PREFIX-build, created with the three roles Google documents
                           for it: logging.logWriter, artifactregistry.writer, storage.objectViewer)
  --notification-channels LIST
                           Cloud Monitoring channels the alert policy "PREFIX alerts" notifies
                           of each new alert: comma-separated projects/P/notificationChannels/ID
                           (docs/alerts.md)
  --job NAME               name of the job, unique per region (default: the workflow id)
  --schedule CRON          unix-cron schedule of the job, e.g. '0 1 * * *'
  --time-zone TZ           IANA time zone of the schedule and of the scheduled times
                           the workflow receives, e.g. Europe/Stockholm
  --body JSON              the workflow's argument, a JSON object (default: {})
  --catch-up DURATION      ISO 8601 duration (weeks, days, hours, minutes, seconds), e.g. P7D
  --overlap MODE           what a scheduled time does while --max-active runs of the job are
                           active: allow (default: start anyway), skip, queue or replace
                           (docs/proxy.md, "Overlap and failure policies")
  --max-active N           runs of the job active at once, 1-100 (default 1 with --overlap)
  --pause-after N          pause the job after N scheduled times in a row failed, 1-100
  --deadline DURATION      the audit's settings, on the job's URI (docs/alerts.md): a time is late
  --since T                when not succeeded by its time + deadline; times before since (RFC 3339,
  --grace DURATION         default: when the job last changed) are not audited; missing after grace
  --lookback DURATION      (default PT10M); a pass looks back lookback (default P2D)
  --delete-runs            destroy the runs bucket (the run ledger) too
  --dry-run                print the gcloud commands that would change something; run only
                           read-only lookups, or none at all without a gcloud login
  -h, --help               show this help
EOF
}

readonly RUNTIME=python312
readonly APIS="cloudresourcemanager.googleapis.com iam.googleapis.com cloudfunctions.googleapis.com run.googleapis.com cloudbuild.googleapis.com artifactregistry.googleapis.com workflows.googleapis.com workflowexecutions.googleapis.com cloudscheduler.googleapis.com logging.googleapis.com storage.googleapis.com monitoring.googleapis.com"
# Scheduler retries are safe: the proxy starts one execution per scheduled time.
readonly JOB_RETRY_FLAGS="--attempt-deadline=180s --max-retry-attempts=5 --min-backoff=30s --max-backoff=600s"
# The catch-up job's own schedule, in the job's zone: once a day, off the hour most jobs use.
readonly CATCH_UP_SCHEDULE="17 3 * * *"
# The audit pass (docs/alerts.md): every 5 minutes; each pass looks back 2 days by default.
readonly AUDIT_SCHEDULE="*/5 * * * *"
readonly EXECUTIONS_API=https://workflowexecutions.googleapis.com
# New service accounts can take a minute to be usable in IAM policies.
readonly RETRY_SECONDS=${DEPLOY_RETRY_SECONDS:-10}
# Google's naming rules, the same as the proxy's _PATH (functions/proxy/main.py), checked on one
# shared table by tests/test_names.py: project ids (optionally domain-scoped), locations, workflows.
readonly PROJECT_ID_RE='([a-z][a-z0-9-]*(\.[a-z0-9-]+)+:)?[a-z][a-z0-9-]{4,28}[a-z0-9]'
readonly LOCATION_RE='[a-z][a-z0-9-]{0,61}[a-z0-9]'
readonly WORKFLOW_RE='[A-Za-z]([A-Za-z0-9_-]{0,62}[A-Za-z0-9])?'
# The same rule as backfill.yaml's `lookback`: no years or months, whose length varies.
readonly LEDGER_CONDITION_TITLE="run ledger only"
readonly HANDOVER_CONDITION_TITLE="backfill hand-overs only"
readonly ALERTS_CONDITION_TITLE="audit alerts only"
# Google's minimum for a function's build account (https://cloud.google.com/functions/docs/securing/build-custom-sa).
readonly BUILD_ROLES="roles/logging.logWriter roles/artifactregistry.writer roles/storage.objectViewer"
# What every wfr command and wfr ui call, besides the functions and the bucket (docs/deploy.md):
# executions (start, follow, list and cancel backfills: the custom executionUser role), resuming a
# paused job (wfr resume: the custom jobResumer role), the functions' URLs
# (cloudfunctions.functions.get) and a job's settings (cloudscheduler.jobs.get).
readonly OPERATOR_VIEWER_ROLES="roles/cloudfunctions.viewer roles/cloudscheduler.viewer"
readonly DURATION_RE='P([0-9]+W)?([0-9]+D)?(T([0-9]+H)?([0-9]+M)?([0-9]+S)?)?'

COMMAND=deploy PROJECT="" REGION="" PREFIX=workflows-runner ALLOWED="" OPERATORS="" BUILD_SA="" CHANNELS=""
TARGET="" JOB="" SCHEDULE="" TIME_ZONE="" BODY="{}" CATCH_UP="" OVERLAP="" MAX_ACTIVE="" PAUSE_AFTER="" DELETE_RUNS=0
DEADLINE="" SINCE="" GRACE="" LOOKBACK=""
DRY_RUN=0 OFFLINE=0 ASSUME_PRESENT=0 ACCOUNT=""

die() { printf 'deploy.sh: %s\n' "$*" >&2; exit 1; }
say() { printf '%s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }

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

# A read-only gcloud call: runs even with --dry-run, its errors mean "not there". Without a
# login (OFFLINE) nothing is looked up at all.
lookup() {
  ((OFFLINE)) && return 1
  if ((DRY_RUN)); then say "[dry-run, read-only, runs] $(quoted gcloud "$@")" >&2; fi
  gcloud "$@" 2>/dev/null
}

# Whether a describe finds the resource. Offline, deploy plans for a fresh project and destroy
# for a complete deployment.
exists() {
  if ((OFFLINE)); then ((ASSUME_PRESENT)); return; fi
  lookup "$@" >/dev/null
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
  case ${1:-} in deploy | schedule | unschedule | jobs | migrate | destroy) COMMAND=$1; shift ;; esac
  local arg value
  while (($#)); do
    arg=$1; shift
    case $arg in --*=*) set -- "${arg#*=}" "$@"; arg=${arg%%=*} ;; esac
    case $arg in
      -h | --help) usage; exit 0 ;;
      --dry-run) DRY_RUN=1 ;;
      --delete-runs) only_for destroy "$arg"; DELETE_RUNS=1 ;;
      --project | --region | --prefix | --allowed-workflows | --operators | --build-service-account | \
        --notification-channels | --job | --schedule | --time-zone | --body | --catch-up | --overlap | --max-active | \
        --pause-after | --deadline | --since | --grace | --lookback)
        (($#)) || die "$arg needs a value (see --help)"
        value=$1; shift
        case $arg in
          --project) PROJECT=$value ;;
          --region) REGION=$value ;;
          --prefix) PREFIX=$value ;;
          --allowed-workflows) only_for deploy "$arg"; ALLOWED=$value ;;
          --operators) only_for deploy "$arg"; OPERATORS=$value ;;
          --build-service-account) only_for deploy "$arg"; BUILD_SA=$value ;;
          --notification-channels) only_for deploy "$arg"; CHANNELS=$value ;;
          --job) only_for schedule "$arg"; JOB=$value ;;
          --schedule) only_for schedule "$arg"; SCHEDULE=$value ;;
          --time-zone) only_for schedule "$arg"; TIME_ZONE=$value ;;
          --body) only_for schedule "$arg"; BODY=$value ;;
          --catch-up) only_for schedule "$arg"; CATCH_UP=$value ;;
          --overlap) only_for schedule "$arg"; OVERLAP=$value ;;
          --max-active) only_for schedule "$arg"; MAX_ACTIVE=$value ;;
          --pause-after) only_for schedule "$arg"; PAUSE_AFTER=$value ;;
          --deadline) only_for schedule "$arg"; DEADLINE=$value ;;
          --since) only_for schedule "$arg"; SINCE=$value ;;
          --grace) only_for schedule "$arg"; GRACE=$value ;;
          --lookback) only_for schedule "$arg"; LOOKBACK=$value ;;
        esac ;;
      -*) die "unknown option: $arg (see --help)" ;;
      *)
        [[ $COMMAND =~ ^(schedule|unschedule|migrate)$ && -z $TARGET ]] ||
          die "unexpected argument: $arg (the command comes first, e.g. ./deploy.sh schedule WORKFLOW ...)"
        TARGET=$arg ;;
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
  case $COMMAND in
    deploy) check_deploy_inputs ;;
    schedule) check_schedule_inputs ;;
    unschedule | migrate)
      [[ -n $TARGET ]] || die "$COMMAND needs a job NAME (see --help)"
      # Scheduler job ids: letters, digits, hyphens and underscores (job.proto).
      [[ $TARGET =~ ^[A-Za-z0-9_-]{1,400}$ ]] || die "invalid job name: $TARGET" ;;
  esac
}

check_deploy_inputs() {
  local need segment='[^/,;[:space:]]+' entry member='(user|group|serviceAccount|domain):[^,[:space:]]+'
  for need in functions/range/main.py functions/proxy/main.py functions/audit/main.py workflows/backfill.yaml \
    workflows/queue.yaml; do
    [[ -f $need ]] || die "$need is missing: run deploy.sh from a complete checkout"
  done
  entry="$segment/$segment/$segment"
  [[ -z $ALLOWED || $ALLOWED =~ ^$entry(,$entry)*$ ]] ||
    die "invalid --allowed-workflows '$ALLOWED': comma-separated project/location/workflow, '*' per segment"
  [[ -z $OPERATORS || $OPERATORS =~ ^$member(,$member)*$ ]] ||
    die "invalid --operators '$OPERATORS': comma-separated principals such as user:ana@example.com or group:ops@example.com"
  [[ -z $BUILD_SA || $BUILD_SA =~ ^[a-z0-9-]+@[a-z0-9.-]+\.gserviceaccount\.com$ ]] ||
    die "invalid --build-service-account '$BUILD_SA': a service account email"
  local channel='projects/[^/,[:space:]]+/notificationChannels/[0-9]+'
  [[ -z $CHANNELS || $CHANNELS =~ ^$channel(,$channel)*$ ]] ||
    die "invalid --notification-channels '$CHANNELS': comma-separated projects/P/notificationChannels/ID (gcloud beta monitoring channels list)"
}

check_schedule_inputs() {
  [[ -n $TARGET ]] || die "schedule needs a WORKFLOW (see --help)"
  [[ $TARGET =~ ^$WORKFLOW_RE$ || $TARGET =~ ^projects/$PROJECT_ID_RE/locations/$LOCATION_RE/workflows/$WORKFLOW_RE$ ]] ||
    die "invalid workflow name: $TARGET (a letter, then up to 63 letters, digits, '_' or '-', ending in a letter or digit; or projects/P/locations/L/workflows/W)"
  JOB=${JOB:-${TARGET##*/}}
  [[ $JOB =~ ^[A-Za-z0-9_-]{1,100}$ ]] || die "invalid job name: $JOB (letters, digits, '_' and '-')"
  [[ $JOB != audit ]] || die "the job name audit is taken by the audit function's own job: pass --job NAME"
  [[ -n $SCHEDULE ]] || die "schedule needs --schedule CRON, e.g. --schedule '0 1 * * *'"
  local cron_chars='^[A-Za-z0-9*/,?#[:space:]-]+$' # nothing that needs quoting in JSON
  [[ $SCHEDULE =~ $cron_chars ]] || die "invalid --schedule: $SCHEDULE"
  [[ -n $TIME_ZONE ]] || die "schedule needs --time-zone TZ, e.g. --time-zone Etc/UTC"
  [[ $TIME_ZONE =~ ^[A-Za-z0-9_+/-]+$ ]] || die "invalid time zone: $TIME_ZONE"
  [[ $BODY =~ ^[[:space:]]*\{.*\}[[:space:]]*$ ]] || die "--body must be a JSON object, e.g. '{\"table\": \"sales\"}'"
  [[ -z $CATCH_UP || ($CATCH_UP =~ ^$DURATION_RE$ && $CATCH_UP =~ [0-9] && $CATCH_UP != *T) ]] ||
    die "invalid --catch-up '$CATCH_UP': an ISO 8601 duration in weeks, days, hours, minutes or seconds, e.g. P7D or PT36H"
  # The proxy's rules (functions/proxy/policy.py), checked before anything changes.
  [[ -z $OVERLAP || $OVERLAP =~ ^(allow|skip|queue|replace)$ ]] ||
    die "invalid --overlap '$OVERLAP': one of allow, skip, queue, replace"
  [[ -z $MAX_ACTIVE || ($OVERLAP =~ ^(skip|queue|replace)$) ]] ||
    die "--max-active applies only with --overlap skip, queue or replace"
  local count='^([1-9][0-9]?|100)$'
  [[ -z $MAX_ACTIVE || $MAX_ACTIVE =~ $count ]] || die "invalid --max-active '$MAX_ACTIVE': a whole number from 1 to 100"
  [[ -z $PAUSE_AFTER || $PAUSE_AFTER =~ $count ]] || die "invalid --pause-after '$PAUSE_AFTER': a whole number from 1 to 100"
  local flag value
  for flag in deadline grace lookback; do
    case $flag in deadline) value=$DEADLINE ;; grace) value=$GRACE ;; lookback) value=$LOOKBACK ;; esac
    [[ -z $value || ($value =~ ^$DURATION_RE$ && $value =~ [0-9] && $value != *T) ]] ||
      die "invalid --$flag '$value': an ISO 8601 duration in weeks, days, hours, minutes or seconds, e.g. PT2H"
  done
  [[ -z $SINCE || $SINCE =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})$ ]] ||
    die "invalid --since '$SINCE': an RFC 3339 date-time with an offset, e.g. 2026-03-01T00:00:00Z"
}

# Without a login (or without gcloud) only a dry run can go on: it prints the plan as if the
# project were fresh (destroy: as if everything existed), looking nothing up.
preflight() {
  local have_gcloud=1
  command -v gcloud >/dev/null 2>&1 || have_gcloud=0
  ((have_gcloud || DRY_RUN)) ||
    die "gcloud not found on PATH: install the Google Cloud CLI (https://cloud.google.com/sdk/docs/install)"
  if ((have_gcloud)); then
    ACCOUNT=$(gcloud auth list --filter=status:ACTIVE --format='value(account)' 2>/dev/null) || ACCOUNT=""
  fi
  if [[ -z $ACCOUNT ]]; then
    ((DRY_RUN)) || die "gcloud is not logged in: run 'gcloud auth login' (or use a service account)"
    OFFLINE=1
    [[ $COMMAND == destroy ]] && ASSUME_PRESENT=1
  fi
  if [[ -z $PROJECT ]] && ((have_gcloud)); then
    PROJECT=$(gcloud config get-value project 2>/dev/null) || PROJECT=""
  fi
  if [[ -z $PROJECT ]]; then
    ((DRY_RUN)) || die "no project: pass --project P or run 'gcloud config set project P'"
    PROJECT=PROJECT_ID
  fi
  if ((OFFLINE)); then
    local plan="a fresh project"
    ((ASSUME_PRESENT)) && plan="a project where everything deploy.sh creates exists"
    say "Dry run without a gcloud login: nothing is looked up; this is the plan for $plan."
    [[ $PROJECT != PROJECT_ID ]] || say "No project given: PROJECT_ID stands for it (pass --project P)."
  fi
}

set_names() {
  SA_RANGE=$PREFIX-range SA_PROXY=$PREFIX-proxy SA_SCHEDULER=$PREFIX-scheduler SA_BACKFILL=$PREFIX-backfill
  SA_BUILD=$PREFIX-build FN_RANGE=$PREFIX-range FN_PROXY=$PREFIX-proxy WF_BACKFILL=$PREFIX-backfill
  SA_AUDIT=$PREFIX-audit FN_AUDIT=$PREFIX-audit JOB_AUDIT=$PREFIX-audit METRIC=$PREFIX-alerts
  SA_QUEUE=$PREFIX-queue WF_QUEUE=$PREFIX-queue
  POLICY_NAME="$PREFIX alerts"
  BUCKET=$PROJECT-$PREFIX-runs
  # Custom role ids allow letters, digits, '_' and '.', not '-'.
  READER_ROLE_ID=${PREFIX//-/_}_executionReader
  EXECUTIONS_ROLE_ID=${PREFIX//-/_}_executionUser
  BACKFILL_ROLE_ID=${PREFIX//-/_}_backfill AUDIT_ROLE_ID=${PREFIX//-/_}_auditReader
  RESUMER_ROLE_ID=${PREFIX//-/_}_jobResumer
}

# Bucket roles limited to a prefix (runs/: the ledger, docs/ledger.md; backfills/: the backfill's
# hand-overs, docs/backfill.md): an IAM condition on the object's resource name,
# projects/_/buckets/BUCKET/objects/NAME (https://cloud.google.com/iam/docs/conditions-resource-attributes).
# A listing names the bucket, not an object, so listings need an unconditioned objectViewer.
condition_title() { # PREFIX
  case $1 in runs/) printf '%s' "$LEDGER_CONDITION_TITLE" ;; backfills/) printf '%s' "$HANDOVER_CONDITION_TITLE" ;;
    alerts/) printf '%s' "$ALERTS_CONDITION_TITLE" ;;
  esac
}
condition_of() { # PREFIX
  printf 'expression=resource.name.startsWith("projects/_/buckets/%s/objects/%s"),title=%s' "$BUCKET" "$1" "$(condition_title "$1")"
}

email() { printf '%s@%s.iam.gserviceaccount.com' "$1" "$PROJECT"; }
member() { printf 'serviceAccount:%s' "$(email "$1")"; }
build_email() { if [[ -n $BUILD_SA ]]; then printf '%s' "$BUILD_SA"; else email "$SA_BUILD"; fi; }

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
  if exists iam service-accounts describe "$(email "$1")" --project="$PROJECT" --format='value(email)'; then
    say "= service account $(email "$1") exists"
  else
    run iam service-accounts create "$1" --project="$PROJECT" --display-name="$2"
  fi
}

# policy_has ROLE MEMBER CONDITION-TITLE GET-IAM-POLICY-COMMAND...: an exact match on the
# flattened bindings, one role<TAB>member<TAB>condition title line per member (no title: a binding
# without a condition). A --filter with '=' is a pattern match that gcloud says will turn into word
# matching, under which deleted:serviceAccount:x?uid=1 would count as serviceAccount:x.
policy_has() {
  local role=$1 who=$2 title=$3 rows line tab=$'\t'
  shift 3
  if ((OFFLINE)); then ((ASSUME_PRESENT)); return; fi
  rows=$(lookup "$@" --flatten='bindings[].members' --format='value(bindings.role,bindings.members,bindings.condition.title)') || return 1
  while IFS= read -r line; do
    line=${line%"$tab"} # an empty last column may come with its separator
    [[ $line == "$role$tab$who${title:+$tab$title}" ]] && return 0
  done <<<"$rows"
  return 1
}

grant_project_role() { # SA ROLE [PROJECT]
  grant_project_member "$(member "$1")" "$2" "${3:-$PROJECT}"
}

grant_project_member() { # MEMBER ROLE [PROJECT]
  local project=${3:-$PROJECT}
  if policy_has "$2" "$1" "" projects get-iam-policy "$project"; then
    say "= $1 has $2 on $project"
  else
    retry run projects add-iam-policy-binding "$project" --member="$1" --role="$2" \
      --condition=None --format=none
  fi
}

revoke_project_role() { # SA ROLE [PROJECT]; silent when not granted
  local project=${3:-$PROJECT}
  if policy_has "$2" "$(member "$1")" "" projects get-iam-policy "$project"; then
    run projects remove-iam-policy-binding "$project" --member="$(member "$1")" --role="$2" \
      --condition=None --format=none
  fi
}

# grant_bucket_role MEMBER ROLE [PREFIX]: on the runs bucket, limited to PREFIX when given.
grant_bucket_role() {
  local title="" condition=None
  if [[ -n ${3:-} ]]; then title=$(condition_title "$3") condition=$(condition_of "$3"); fi
  if policy_has "$2" "$1" "$title" storage buckets get-iam-policy "gs://$BUCKET"; then
    say "= $1 has $2 on gs://$BUCKET${title:+ ($title)}"
  else
    retry run storage buckets add-iam-policy-binding "gs://$BUCKET" --member="$1" --role="$2" \
      --condition="$condition" --format=none
  fi
}

revoke_bucket_role() { # MEMBER ROLE [PREFIX]
  local title="" condition=None
  if [[ -n ${3:-} ]]; then title=$(condition_title "$3") condition=$(condition_of "$3"); fi
  if policy_has "$2" "$1" "$title" storage buckets get-iam-policy "gs://$BUCKET"; then
    run storage buckets remove-iam-policy-binding "gs://$BUCKET" --member="$1" --role="$2" \
      --condition="$condition" --format=none
  fi
}

grant_invoker() { # FUNCTION SA
  grant_invoker_member "$1" "$(member "$2")"
}

grant_invoker_member() { # FUNCTION MEMBER
  if policy_has roles/run.invoker "$2" "" run services get-iam-policy "$1" --region="$REGION" --project="$PROJECT"; then
    say "= $2 may invoke $1"
  else
    retry run functions add-invoker-policy-binding "$1" --region="$REGION" --project="$PROJECT" \
      --member="$2"
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

# The projects named in ALLOWED other than PROJECT, one per line ('*' cannot be granted on).
other_projects() {
  local entries entry project seen=" $PROJECT "
  IFS=, read -r -a entries <<<"$ALLOWED"
  for entry in ${entries[@]+"${entries[@]}"}; do
    project=${entry%%/*}
    [[ $project == "*" || $seen == *" $project "* ]] && continue
    seen="$seen$project "
    printf '%s\n' "$project"
  done
}

# Whether ALLOWED lets the proxy start PROJECT/REGION/WORKFLOW ('*' matches a whole segment).
allowed() {
  local entries entry p l w
  IFS=, read -r -a entries <<<"$ALLOWED"
  for entry in ${entries[@]+"${entries[@]}"}; do
    IFS=/ read -r p l w <<<"$entry"
    [[ ($p == "*" || $p == "$PROJECT") && ($l == "*" || $l == "$REGION") && ($w == "*" || $w == "$1") ]] && return 0
  done
  return 1
}

# The custom roles, where a predefined role is broader than the calls: roles/workflows.invoker
# also sends callbacks and reads step entries, and Workflows roles can only be granted on a
# project (https://cloud.google.com/iam/docs/roles-permissions/workflows).
ensure_role() { # PROJECT executions|backfill|reader|audit|resumer
  local id title description permissions
  case $2 in
    executions)
      id=$EXECUTIONS_ROLE_ID title="workflows-runner executions"
      description="Start, read, list and cancel executions: the proxy's runs and operators' backfills"
      permissions=workflows.executions.cancel,workflows.executions.create,workflows.executions.get,workflows.executions.list ;;
    backfill)
      id=$BACKFILL_ROLE_ID title="workflows-runner backfill"
      description="Start the backfill's next link and wait on runs, nothing else"
      permissions=workflows.executions.create,workflows.executions.get ;;
    reader)
      id=$READER_ROLE_ID title="workflows-runner execution reader"
      description="Read one execution's state, nothing else: the backfill waits on runs with it"
      permissions=workflows.executions.get ;;
    audit)  # the state of runs the ledger does not show ended yet; viewer would show workflow sources
      id=$AUDIT_ROLE_ID title="workflows-runner audit reader"
      description="Read and list executions, pause a job: the audit learns the state of runs not yet settled and applies pauseAfter"
      permissions=cloudscheduler.jobs.pause,workflows.executions.get,workflows.executions.list ;;
    resumer) # jobs.resume checks cloudscheduler.jobs.enable; there is no jobs.resume permission
      # (https://cloud.google.com/scheduler/docs/reference/rest/v1beta1/projects.locations.jobs/resume)
      id=$RESUMER_ROLE_ID title="workflows-runner job resumer"
      description="Resume a paused Scheduler job, nothing else: wfr resume"
      permissions=cloudscheduler.jobs.enable ;;
  esac
  if exists iam roles describe "$id" --project="$1" --format='value(name)'; then
    say "= role projects/$1/roles/$id exists"
  else
    run iam roles create "$id" --project="$1" --title="$title" --description="$description" \
      --permissions="$permissions" --stage=GA --format=none
  fi
}

# The log-based metric counting the audit's alert lines by kind and job (docs/alerts.md). Labels
# need a LogMetric config file (https://cloud.google.com/logging/docs/reference/v2/rest/v2/projects.metrics).
ensure_alert_metric() {
  local file=$PWD/.build/$METRIC.json verb=create
  mkdir -p .build
  # printf, a builtin: a dry run without gcloud may have little else on PATH.
  printf '%s\n' "{\"description\": \"workflows-runner alerts raised by the audit function $FN_AUDIT (docs/alerts.md)\"," \
    " \"filter\": \"resource.type=\\\"cloud_run_revision\\\" AND resource.labels.service_name=\\\"$FN_AUDIT\\\" AND jsonPayload.event=\\\"alert\\\"\"," \
    " \"labelExtractors\": {\"kind\": \"EXTRACT(jsonPayload.kind)\", \"job\": \"EXTRACT(jsonPayload.job)\"}," \
    " \"metricDescriptor\": {\"metricKind\": \"DELTA\", \"valueType\": \"INT64\", \"unit\": \"1\", \"labels\": [" \
    "   {\"key\": \"kind\", \"description\": \"missing, late, failed or paused\"}," \
    "   {\"key\": \"job\", \"description\": \"the Scheduler job's full name\"}]}}" >"$file"
  if exists logging metrics describe "$METRIC" --project="$PROJECT" --format='value(name)'; then verb=update; fi
  run logging metrics "$verb" "$METRIC" --project="$PROJECT" --config-from-file="$file"
}

# The alert policy: any alert line in a 5-minute window notifies CHANNELS. Only with
# --notification-channels; without it, an existing policy stays as it is.
ensure_alert_policy() {
  if [[ -z $CHANNELS ]]; then
    say "= no --notification-channels: alerts are logged and counted, no policy notifies"
    return
  fi
  local name channels policy filter
  channels="\"${CHANNELS//,/\",\"}\""
  filter="metric.type=\\\"logging.googleapis.com/user/$METRIC\\\" AND resource.type=\\\"cloud_run_revision\\\""
  policy="{\"displayName\": \"$POLICY_NAME\", \"combiner\": \"OR\", \"notificationChannels\": [$channels],"
  policy="$policy \"conditions\": [{\"displayName\": \"an alert was raised\", \"conditionThreshold\": {\"filter\": \"$filter\","
  policy="$policy \"comparison\": \"COMPARISON_GT\", \"thresholdValue\": 0, \"duration\": \"0s\", \"aggregations\": [{\"alignmentPeriod\": \"300s\","
  policy="$policy \"perSeriesAligner\": \"ALIGN_SUM\", \"crossSeriesReducer\": \"REDUCE_SUM\", \"groupByFields\": [\"metric.label.kind\", \"metric.label.job\"]}]}}],"
  policy="$policy \"documentation\": {\"mimeType\": \"text/markdown\", \"content\": \"A scheduled time of a workflows-runner job is missing, late or failed: wfr alerts lists them (docs/alerts.md).\"}}"
  if name=$(alert_policy); then
    run alpha monitoring policies update "$name" --project="$PROJECT" --policy="$policy"
  else
    run alpha monitoring policies create --project="$PROJECT" --policy="$policy"
  fi
}

alert_policy() { # prints the alert policy's name; fails when there is none
  local name
  name=$(lookup alpha monitoring policies list --project="$PROJECT" --filter="displayName=\"$POLICY_NAME\"" --format='value(name)') || return 1
  [[ -n $name ]] || return 1
  printf '%s' "${name%%$'\n'*}"
}

ensure_bucket() {
  if exists storage buckets describe "gs://$BUCKET" --format='value(name)'; then
    say "= bucket gs://$BUCKET exists"
  else
    run storage buckets create "gs://$BUCKET" --project="$PROJECT" --location="$REGION" \
      --uniform-bucket-level-access --public-access-prevention
  fi
}

# A function's folder as it deploys: its own files, plus the modules of workflows_runner/ its
# SHARED file lists, copied into workflows_runner/ beside main.py in .build/functions/NAME
# (docs/alerts.md, "How the audit shares wfr's code"; localcloud and the Pulumi component build
# the same files, tests/test_audit_source.py). A folder without SHARED deploys as it is.
function_source() { # NAME; prints the folder to upload
  local folder=functions/$1 out=.build/functions/$1 file module
  if [[ ! -f $folder/SHARED ]]; then printf '%s' "$folder"; return; fi
  rm -rf "$out"
  mkdir -p "$out/workflows_runner"
  for file in "$folder"/*; do
    if [[ -f $file && $file != *.pyc ]]; then cp "$file" "$out/"; fi
  done
  while read -r module; do
    if [[ -n $module && $module != \#* ]]; then cp "workflows_runner/$module" "$out/workflows_runner/$module"; fi
  done <"$folder/SHARED"
  printf '%s' "$out"
}

deploy_function() { # NAME SOURCE ENTRY-POINT SERVICE-ACCOUNT FLAG...
  # --build-service-account: projects created since mid-2024 may build with the Compute Engine
  # default account, which may lack roles/cloudbuild.builds.builder, and gcloud only says so in
  # a prompt that --quiet suppresses. https://cloud.google.com/functions/docs/securing/build-custom-sa
  run functions deploy "$1" --gen2 --region="$REGION" --project="$PROJECT" --runtime="$RUNTIME" \
    --source="$2" --entry-point="$3" --trigger-http --no-allow-unauthenticated \
    --service-account="$(email "$4")" \
    --build-service-account="projects/$PROJECT/serviceAccounts/$(build_email)" "${@:5}" --quiet
}

cmd_deploy() {
  ALLOWED=${ALLOWED:-$PROJECT/$REGION/*}
  # Catch-up jobs start the backfill through the proxy, so the proxy must be allowed to.
  allowed "$WF_BACKFILL" || ALLOWED="$ALLOWED,$PROJECT/$REGION/$WF_BACKFILL"
  say "Deploying workflows-runner to project $PROJECT, region $REGION, prefix $PREFIX${ACCOUNT:+ (as $ACCOUNT)}"
  enable_apis
  ensure_service_account "$SA_RANGE" "workflows-runner range function"
  ensure_service_account "$SA_PROXY" "workflows-runner proxy function"
  ensure_service_account "$SA_SCHEDULER" "workflows-runner Cloud Scheduler jobs"
  ensure_service_account "$SA_BACKFILL" "workflows-runner backfill workflow"
  ensure_service_account "$SA_AUDIT" "workflows-runner audit function"
  ensure_service_account "$SA_QUEUE" "workflows-runner queue waiter"
  [[ -n $BUILD_SA ]] || ensure_service_account "$SA_BUILD" "workflows-runner function builds"
  local operators operator role
  IFS=, read -r -a operators <<<"$OPERATORS"
  # Workflows roles can only be granted on the project: custom roles hold only the calls made.
  ensure_role "$PROJECT" executions
  ensure_role "$PROJECT" backfill
  grant_project_role "$SA_PROXY" "projects/$PROJECT/roles/$EXECUTIONS_ROLE_ID"
  # The backfill starts its own next link (a long backfill chains executions) and waits on runs.
  grant_project_role "$SA_BACKFILL" "projects/$PROJECT/roles/$BACKFILL_ROLE_ID"
  grant_project_role "$SA_BACKFILL" roles/logging.logWriter
  # The queue waiter only sleeps and calls the proxy (its invoker grant below), and logs.
  grant_project_role "$SA_QUEUE" roles/logging.logWriter
  if [[ -z $BUILD_SA ]]; then
    for role in $BUILD_ROLES; do grant_project_role "$SA_BUILD" "$role"; done
  fi
  ensure_role "$PROJECT" resumer
  for operator in ${operators[@]+"${operators[@]}"}; do
    grant_project_member "$operator" "projects/$PROJECT/roles/$EXECUTIONS_ROLE_ID"
    grant_project_member "$operator" "projects/$PROJECT/roles/$RESUMER_ROLE_ID"
    for role in $OPERATOR_VIEWER_ROLES; do grant_project_member "$operator" "$role"; done
  done
  # Broader than the calls, granted by earlier versions: taken back.
  revoke_project_role "$SA_PROXY" roles/workflows.invoker
  revoke_project_role "$SA_BACKFILL" roles/workflows.invoker
  revoke_project_role "$SA_BACKFILL" roles/workflows.viewer
  revoke_project_role "$SA_BUILD" roles/cloudbuild.builds.builder
  # The audit lists the Scheduler jobs (their URIs carry the settings) and reads executions.
  grant_project_role "$SA_AUDIT" roles/cloudscheduler.viewer
  ensure_role "$PROJECT" audit
  grant_project_role "$SA_AUDIT" "projects/$PROJECT/roles/$AUDIT_ROLE_ID"
  grant_other_projects

  ensure_bucket
  # The proxy reads and lists the ledger, and under runs/ only creates claims, records states
  # (update) and overwrites a stale claim (delete). On this bucket only, never the project.
  grant_bucket_role "$(member "$SA_PROXY")" roles/storage.objectViewer
  grant_bucket_role "$(member "$SA_PROXY")" roles/storage.objectUser runs/
  # The backfill creates and reads its hand-overs under backfills/: nothing is listed, overwritten
  # or deleted (docs/backfill.md).
  grant_bucket_role "$(member "$SA_BACKFILL")" roles/storage.objectCreator backfills/
  grant_bucket_role "$(member "$SA_BACKFILL")" roles/storage.objectViewer backfills/
  # The audit lists and reads the ledger, writes back the states it learns (runs/), and creates
  # alert records and marks them resolved (alerts/, docs/alerts.md).
  grant_bucket_role "$(member "$SA_AUDIT")" roles/storage.objectViewer
  grant_bucket_role "$(member "$SA_AUDIT")" roles/storage.objectUser runs/
  grant_bucket_role "$(member "$SA_AUDIT")" roles/storage.objectUser alerts/
  # Operators: wfr reads the ledger, writes learned states back and resolves stale claims (runs/).
  for operator in ${operators[@]+"${operators[@]}"}; do
    grant_bucket_role "$operator" roles/storage.objectViewer
    grant_bucket_role "$operator" roles/storage.objectUser runs/
  done
  # Earlier versions: the proxy's objectUser and the backfill's objectViewer on the whole bucket.
  revoke_bucket_role "$(member "$SA_PROXY")" roles/storage.objectUser
  revoke_bucket_role "$(member "$SA_BACKFILL")" roles/storage.objectViewer

  deploy_function "$FN_RANGE" functions/range expand_range "$SA_RANGE" --clear-env-vars
  # ^;^ makes ';' the list separator: ALLOWED_WORKFLOWS itself contains commas. The timeout
  # outlasts the proxy's own 60 s upstream deadline, so it answers a clean 503 first. A queued
  # time waits in an execution of QUEUE_WORKFLOW (docs/proxy.md), which executionUser may start.
  deploy_function "$FN_PROXY" functions/proxy proxy "$SA_PROXY" \
    "--set-env-vars=^;^GOOGLE_CLOUD_PROJECT=$PROJECT;ALLOWED_WORKFLOWS=$ALLOWED;RUNS_BUCKET=$BUCKET;QUEUE_WORKFLOW=projects/$PROJECT/locations/$REGION/workflows/$WF_QUEUE" \
    --timeout=120s
  local range_url proxy_url
  range_url=$(function_url "$FN_RANGE") || die "could not read the URL of $FN_RANGE"
  proxy_url=$(function_url "$FN_PROXY") || die "could not read the URL of $FN_PROXY"

  grant_invoker "$FN_RANGE" "$SA_BACKFILL"
  grant_invoker "$FN_PROXY" "$SA_BACKFILL"
  grant_invoker "$FN_PROXY" "$SA_SCHEDULER"
  grant_invoker "$FN_PROXY" "$SA_QUEUE"
  # wfr status calls the range function; wfr rerun and wfr ui's re-runs call the proxy.
  for operator in ${operators[@]+"${operators[@]}"}; do
    grant_invoker_member "$FN_RANGE" "$operator"
    grant_invoker_member "$FN_PROXY" "$operator"
  done

  local audit_source audit_url
  audit_source=$(function_source audit)
  deploy_function "$FN_AUDIT" "$audit_source" audit_pass "$SA_AUDIT" \
    "--set-env-vars=GOOGLE_CLOUD_PROJECT=$PROJECT,LOCATION=$REGION,RUNS_BUCKET=$BUCKET,RANGE_URL=$range_url,PROXY_URL=$proxy_url" \
    --timeout=180s
  audit_url=$(function_url "$FN_AUDIT") || die "could not read the URL of $FN_AUDIT"
  grant_invoker "$FN_RANGE" "$SA_AUDIT"
  grant_invoker "$FN_AUDIT" "$SA_SCHEDULER"
  put_job "$JOB_AUDIT" "$AUDIT_SCHEDULE" Etc/UTC "$audit_url" "{}" "$audit_url"
  ensure_alert_metric
  ensure_alert_policy

  run workflows deploy "$WF_BACKFILL" --location="$REGION" --project="$PROJECT" \
    --source=workflows/backfill.yaml --service-account="$(email "$SA_BACKFILL")" \
    --set-env-vars="RANGE_URL=$range_url,PROXY_URL=$proxy_url,RUNS_BUCKET=$BUCKET" --quiet
  # The queue waiter re-delivers a queued time to the proxy (OIDC, audience PROXY_URL) until it starts.
  run workflows deploy "$WF_QUEUE" --location="$REGION" --project="$PROJECT" \
    --source=workflows/queue.yaml --service-account="$(email "$SA_QUEUE")" \
    --set-env-vars="PROXY_URL=$proxy_url" --quiet

  if ((DRY_RUN)); then
    say "Dry run: nothing was changed. The [dry-run] lines are the commands a real run would make."
    return
  fi
  cat <<EOF

workflows-runner is deployed in $PROJECT ($REGION):
  range function    $FN_RANGE  $range_url
  proxy function    $FN_PROXY  $proxy_url  (may start: $ALLOWED)
  audit function    $FN_AUDIT  $audit_url  (job $JOB_AUDIT, metric $METRIC; docs/alerts.md)
  backfill workflow $WF_BACKFILL
  queue workflow    $WF_QUEUE  (overlap=queue: a queued time waits in one of its executions)
  run ledger        gs://$BUCKET

Schedule one of your workflows through the proxy:
  ./deploy.sh schedule MY_WORKFLOW --schedule '0 1 * * *' --time-zone Etc/UTC --project $PROJECT --region $REGION --prefix $PREFIX

Start a backfill (one run per scheduled time in [start, stop), skipping times that already ran):
  gcloud workflows run $WF_BACKFILL --location=$REGION --project=$PROJECT \\
    --data='{"workflow": "MY_WORKFLOW", "start": "2024-03-01T00:00:00Z", "stop": "2024-07-01T00:00:00Z", "step": "0 1 * * *", "concurrency": 5}'
EOF
}

# Workflows in other projects of the allowlist: the proxy starts runs there and the backfill
# waits on them, which takes only workflows.executions.get (roles/workflows.viewer would also
# show every workflow's source and every execution's arguments).
grant_other_projects() {
  local project
  for project in $(other_projects); do
    ensure_role "$project" executions
    ensure_role "$project" reader
    grant_project_role "$SA_PROXY" "projects/$project/roles/$EXECUTIONS_ROLE_ID" "$project"
    grant_project_role "$SA_BACKFILL" "projects/$project/roles/$READER_ROLE_ID" "$project"
    revoke_project_role "$SA_PROXY" roles/workflows.invoker "$project" # earlier versions
  done
  case ,$ALLOWED in *,\*/*)
    warn "--allowed-workflows names '*' projects: grant $(email "$SA_PROXY") workflows.executions.cancel, create, get and list and $(email "$SA_BACKFILL") workflows.executions.get in each yourself" ;;
  esac
}

# The proxy URL that starts PROJECT/LOCATION/WORKFLOW; '+' in a query string means a space, so
# Etc/GMT+5 is sent as Etc/GMT%2B5.
executions_uri() { # PROXY-URL PROJECT LOCATION WORKFLOW TIME-ZONE [SETTINGS]
  printf '%s/v1/projects/%s/locations/%s/workflows/%s/executions?timezone=%s%s' "$1" "$2" "$3" "$4" "${5//+/%2B}" "${6:-}"
}

# The job's overlap and failure settings as query parameters (docs/proxy.md), in this order.
policy_query() {
  local query=""
  [[ -z $OVERLAP || $OVERLAP == allow ]] || query+="&overlap=$OVERLAP"
  [[ -z $MAX_ACTIVE ]] || query+="&maxActive=$MAX_ACTIVE"
  [[ -z $PAUSE_AFTER ]] || query+="&pauseAfter=$PAUSE_AFTER"
  printf '%s' "$query"
}

# The audit's settings given to schedule, as the query they add to the job's URI (read back by
# workflows_runner/job_settings.py; '+' in an offset is sent as %2B).
audit_query() {
  local query=""
  [[ -z $DEADLINE ]] || query="$query&deadline=$DEADLINE"
  [[ -z $SINCE ]] || query="$query&since=${SINCE//+/%2B}"
  [[ -z $GRACE ]] || query="$query&grace=$GRACE"
  [[ -z $LOOKBACK ]] || query="$query&lookback=$LOOKBACK"
  printf '%s' "$query"
}

put_job() { # JOB CRON TIME-ZONE URI BODY PROXY-URL
  local verb=create headers=--headers
  if exists scheduler jobs describe "$1" --location="$REGION" --project="$PROJECT" --format='value(name)'; then
    verb=update headers=--update-headers
  fi
  # shellcheck disable=SC2086 # JOB_RETRY_FLAGS is a list of flags
  run scheduler jobs "$verb" http "$1" --location="$REGION" --project="$PROJECT" \
    --schedule="$2" --time-zone="$3" --uri="$4" --http-method=post \
    "$headers=Content-Type=application/json" --message-body="$5" \
    --oidc-service-account-email="$(email "$SA_SCHEDULER")" --oidc-token-audience="$6" \
    $JOB_RETRY_FLAGS --quiet
  local outcome=${verb}d
  ((!DRY_RUN)) || outcome="would be ${verb}d"
  say "Scheduler job $1 ($outcome) runs at '$2' ($3)"
}

delete_job() { # JOB; says so when there is none
  if exists scheduler jobs describe "$1" --location="$REGION" --project="$PROJECT" --format='value(name)'; then
    run scheduler jobs delete "$1" --location="$REGION" --project="$PROJECT" --quiet
  else
    say "= no job $1"
  fi
}

cmd_schedule() {
  local project=$PROJECT location=$REGION name=$TARGET proxy_url
  if [[ $TARGET == projects/* ]]; then
    IFS=/ read -r _ project _ location _ name <<<"$TARGET"
  fi
  proxy_url=$(function_url "$FN_PROXY") || die "$FN_PROXY is not deployed in $PROJECT/$REGION: run ./deploy.sh first"
  put_job "$PREFIX-$JOB" "$SCHEDULE" "$TIME_ZONE" \
    "$(executions_uri "$proxy_url" "$project" "$location" "$name" "$TIME_ZONE" "$(policy_query)")$(audit_query)" "$BODY" "$proxy_url"
  say "  it starts $project/$location/$name through $proxy_url"
  if [[ -z $CATCH_UP ]]; then
    if exists scheduler jobs describe "$PREFIX-$JOB-catch-up" --location="$REGION" --project="$PROJECT" --format='value(name)'; then
      run scheduler jobs delete "$PREFIX-$JOB-catch-up" --location="$REGION" --project="$PROJECT" --quiet
    fi
  else
    # The backfill's argument: each daily run fills [its scheduled time - lookback, its scheduled
    # time) with reprocess none, so only times that never ran (or are not yet set right) start.
    local body
    body="{\"workflow\": \"projects/$project/locations/$location/workflows/$name\", \"step\": \"$SCHEDULE\", \"timezone\": \"$TIME_ZONE\", \"params\": $BODY, \"lookback\": \"$CATCH_UP\"}"
    put_job "$PREFIX-$JOB-catch-up" "$CATCH_UP_SCHEDULE" "$TIME_ZONE" \
      "$(executions_uri "$proxy_url" "$PROJECT" "$REGION" "$WF_BACKFILL" "$TIME_ZONE")" "$body" "$proxy_url"
    say "  it starts $WF_BACKFILL over the last $CATCH_UP of $name's times"
  fi
  if ((DRY_RUN)); then say "Dry run: nothing was changed."; fi
}

cmd_unschedule() {
  delete_job "$PREFIX-$TARGET"
  delete_job "$PREFIX-$TARGET-catch-up"
  if ((DRY_RUN)); then say "Dry run: nothing was changed."; fi
}

# Jobs of the region, one per line: name|schedule|zone|next run|state|uri.
list_jobs() {
  lookup scheduler jobs list --location="$REGION" --project="$PROJECT" \
    --format='value[separator="|"](name.basename(),schedule,timeZone,scheduleTime,state,httpTarget.uri)'
}

cmd_jobs() {
  ((!OFFLINE)) || die "jobs reads the project's Scheduler jobs: log in first (gcloud auth login)"
  local proxy_url rows name cron zone next state uri workflow found=0
  proxy_url=$(lookup functions describe "$FN_PROXY" --region="$REGION" --project="$PROJECT" --format='value(serviceConfig.uri)') ||
    die "$FN_PROXY is not deployed in $PROJECT/$REGION: no job can target it"
  rows=$(list_jobs) || die "could not list the Scheduler jobs of $PROJECT/$REGION"
  while IFS='|' read -r name cron zone next state uri; do
    [[ -n $name && $uri == "$proxy_url/"* ]] || continue
    if ((!found)); then
      printf '%-32s %-40s %-16s %-20s %-26s %s\n' JOB WORKFLOW SCHEDULE TIME_ZONE NEXT_RUN STATE
      found=1
    fi
    workflow=${uri#"$proxy_url"/v1/}
    workflow=${workflow%/executions*}
    [[ $name != "$PREFIX-"* ]] || name=${name#"$PREFIX-"}
    printf '%-32s %-40s %-16s %-20s %-26s %s\n' "$name" "$workflow" "$cron" "$zone" "$next" "$state"
  done <<<"$rows"
  ((found)) || say "No Scheduler job in $PROJECT/$REGION targets $FN_PROXY yet: ./deploy.sh schedule WORKFLOW ..."
}

cmd_migrate() {
  ((!OFFLINE)) || die "migrate reads the job first: log in (gcloud auth login); --dry-run then shows the change without making it"
  local proxy_url row uri cron zone oauth new_uri
  proxy_url=$(function_url "$FN_PROXY") || die "$FN_PROXY is not deployed in $PROJECT/$REGION: run ./deploy.sh first"
  row=$(lookup scheduler jobs describe "$TARGET" --location="$REGION" --project="$PROJECT" \
    --format='value[separator="|"](httpTarget.uri,schedule,timeZone,httpTarget.oauthToken.serviceAccountEmail)') ||
    die "no Scheduler job $TARGET in $PROJECT/$REGION"
  IFS='|' read -r uri cron zone oauth <<<"$row"
  if [[ $uri == "$proxy_url/"* ]]; then say "= job $TARGET already starts its workflow through the proxy"; return; fi
  [[ $uri == "$EXECUTIONS_API"/v1/* &&
    ${uri#"$EXECUTIONS_API"} =~ ^/v1/projects/$PROJECT_ID_RE/locations/$LOCATION_RE/workflows/$WORKFLOW_RE/executions$ ]] ||
    die "job $TARGET does not call the Workflows Executions API (its URI is ${uri:-none}): nothing to migrate"
  zone=${zone:-Etc/UTC} # Scheduler's default zone (job.proto)
  new_uri="$proxy_url${uri#"$EXECUTIONS_API"}?timezone=${zone//+/%2B}"
  cat <<EOF
Job $TARGET: schedule '$cron' ($zone), retry settings and body stay as they are.
  uri   $uri
     -> $new_uri
  auth  OAuth token of ${oauth:-nobody}
     -> OIDC token of $(email "$SA_SCHEDULER"), audience $proxy_url
The proxy accepts the job's Execution-shaped body ({"argument": "<JSON string>", ...}) as it is.
EOF
  run scheduler jobs update http "$TARGET" --location="$REGION" --project="$PROJECT" --uri="$new_uri" \
    --update-headers=Content-Type=application/json \
    --oidc-service-account-email="$(email "$SA_SCHEDULER")" --oidc-token-audience="$proxy_url" --quiet
  if ((DRY_RUN)); then say "Dry run: nothing was changed."; fi
}

cmd_destroy() {
  say "Removing workflows-runner from project $PROJECT, region $REGION, prefix $PREFIX${ACCOUNT:+ (as $ACCOUNT)}"
  local proxy_url="" fn sa project wf
  proxy_url=$(lookup functions describe "$FN_PROXY" --region="$REGION" --project="$PROJECT" --format='value(serviceConfig.uri)') || proxy_url=""
  ALLOWED=$(lookup functions describe "$FN_PROXY" --region="$REGION" --project="$PROJECT" \
    --format='value(serviceConfig.environmentVariables.ALLOWED_WORKFLOWS)') || ALLOWED=""
  destroy_jobs "$proxy_url"
  delete_job "$JOB_AUDIT"
  local policy
  if policy=$(alert_policy); then
    run alpha monitoring policies delete "$policy" --project="$PROJECT" --quiet
  elif ((OFFLINE)); then
    say "[dry-run] (if the alert policy '$POLICY_NAME' exists) gcloud alpha monitoring policies delete POLICY --project=$PROJECT --quiet"
  fi
  if exists logging metrics describe "$METRIC" --project="$PROJECT" --format='value(name)'; then
    run logging metrics delete "$METRIC" --project="$PROJECT" --quiet
  fi
  for wf in "$WF_BACKFILL" "$WF_QUEUE"; do
    if exists workflows describe "$wf" --location="$REGION" --project="$PROJECT" --format='value(name)'; then
      run workflows delete "$wf" --location="$REGION" --project="$PROJECT" --quiet
    fi
  done
  # A function's invoker bindings go with it.
  for fn in "$FN_AUDIT" "$FN_PROXY" "$FN_RANGE"; do
    if exists functions describe "$fn" --region="$REGION" --project="$PROJECT" --format='value(name)'; then
      run functions delete "$fn" --gen2 --region="$REGION" --project="$PROJECT" --quiet
    fi
  done
  if exists storage buckets describe "gs://$BUCKET" --format='value(name)'; then
    if ((DELETE_RUNS)); then
      run storage rm --recursive "gs://$BUCKET"
    else
      revoke_bucket_role "$(member "$SA_PROXY")" roles/storage.objectViewer
      revoke_bucket_role "$(member "$SA_PROXY")" roles/storage.objectUser runs/
      revoke_bucket_role "$(member "$SA_PROXY")" roles/storage.objectUser
      revoke_bucket_role "$(member "$SA_BACKFILL")" roles/storage.objectCreator backfills/
      revoke_bucket_role "$(member "$SA_BACKFILL")" roles/storage.objectViewer backfills/
      revoke_bucket_role "$(member "$SA_BACKFILL")" roles/storage.objectViewer
      revoke_bucket_role "$(member "$SA_AUDIT")" roles/storage.objectViewer
      revoke_bucket_role "$(member "$SA_AUDIT")" roles/storage.objectUser runs/
      revoke_bucket_role "$(member "$SA_AUDIT")" roles/storage.objectUser alerts/
      say "= kept gs://$BUCKET, the run ledger (--delete-runs removes it; operators' grants stay)"
    fi
  fi
  # Bindings before their service accounts, so none lingers as a deleted:serviceAccount member.
  revoke_project_role "$SA_PROXY" "projects/$PROJECT/roles/$EXECUTIONS_ROLE_ID"
  revoke_project_role "$SA_PROXY" roles/workflows.invoker
  revoke_project_role "$SA_BACKFILL" "projects/$PROJECT/roles/$BACKFILL_ROLE_ID"
  revoke_project_role "$SA_BACKFILL" roles/workflows.invoker
  revoke_project_role "$SA_BACKFILL" roles/logging.logWriter
  revoke_project_role "$SA_BACKFILL" roles/workflows.viewer
  revoke_project_role "$SA_QUEUE" roles/logging.logWriter
  for role in $BUILD_ROLES roles/cloudbuild.builds.builder; do revoke_project_role "$SA_BUILD" "$role"; done
  revoke_project_role "$SA_AUDIT" roles/cloudscheduler.viewer
  revoke_project_role "$SA_AUDIT" "projects/$PROJECT/roles/$AUDIT_ROLE_ID"
  for project in $(other_projects); do
    revoke_project_role "$SA_PROXY" "projects/$project/roles/$EXECUTIONS_ROLE_ID" "$project"
    revoke_project_role "$SA_PROXY" roles/workflows.invoker "$project"
    revoke_project_role "$SA_BACKFILL" "projects/$project/roles/$READER_ROLE_ID" "$project"
  done
  for sa in "$SA_RANGE" "$SA_PROXY" "$SA_SCHEDULER" "$SA_BACKFILL" "$SA_AUDIT" "$SA_QUEUE" "$SA_BUILD"; do
    if exists iam service-accounts describe "$(email "$sa")" --project="$PROJECT" --format='value(email)'; then
      run iam service-accounts delete "$(email "$sa")" --project="$PROJECT" --quiet
    fi
  done
  # A deleted custom role id stays reserved for weeks, so a later deploy could not create it again.
  say "Kept the custom roles $EXECUTIONS_ROLE_ID, $BACKFILL_ROLE_ID, $AUDIT_ROLE_ID and $RESUMER_ROLE_ID in $PROJECT (operators may still hold the first and the last)"
  [[ -z $(other_projects) ]] || say "Kept the custom roles $EXECUTIONS_ROLE_ID and $READER_ROLE_ID (no service account left on them) in: $(other_projects | tr '\n' ' ')"
  if ((DRY_RUN)); then say "Dry run: nothing was changed."; else say "workflows-runner is removed from $PROJECT ($REGION)."; fi
}

# Delete the jobs deploy.sh made (PREFIX-*, targeting the proxy); warn about other jobs that
# target it (migrated ones), which will fail once it is gone.
destroy_jobs() { # PROXY-URL (empty when the proxy is already gone)
  local rows name uri _
  if ((OFFLINE)); then
    say "[dry-run] (for each Scheduler job $PREFIX-* that targets the proxy) gcloud scheduler jobs delete JOB --location=$REGION --project=$PROJECT --quiet"
    return
  fi
  rows=$(list_jobs) || rows=""
  while IFS='|' read -r name _ _ _ _ uri; do
    [[ -n $name ]] || continue
    # Without the proxy, its jobs are still known by their URI: only the proxy takes ?timezone=.
    if [[ -n $1 && $uri == "$1/"* ]] || [[ -z $1 && $uri == https://*/v1/projects/*/executions\?timezone=* ]]; then
      if [[ $name == "$PREFIX-"* ]]; then
        run scheduler jobs delete "$name" --location="$REGION" --project="$PROJECT" --quiet
      else
        warn "job $name (not made by deploy.sh) targets the proxy and will fail once it is gone: delete it or point it back at Workflows"
      fi
    fi
  done <<<"$rows"
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
  "cmd_$COMMAND"
}

main "$@"
