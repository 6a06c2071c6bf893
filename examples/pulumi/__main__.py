"""One workflows-runner and two of your workflows on schedules, each run receiving its
scheduled time as `scheduleTime` (docs/pulumi.md). The workflows themselves (sales-etl,
orders-sync) are yours: deploy them in the same project and region, here or elsewhere."""
import pulumi

from workflows_runner_pulumi import ScheduledWorkflow, WorkflowsRunner

config = pulumi.Config()
region = config.get("region") or "europe-west1"

runner = WorkflowsRunner("runner", region=region)

ScheduledWorkflow(
    "sales-nightly", runner=runner, workflow="sales-etl",
    schedule="0 1 * * *", time_zone="Europe/Stockholm", body={"table": "sales"},
    catch_up="P7D")  # a daily backfill of the last 7 days' missed times
ScheduledWorkflow(
    "orders-hourly", runner=runner, workflow="orders-sync",
    schedule="15 * * * *", time_zone="Etc/UTC", body={"table": "orders", "full": False})

pulumi.export("range_url", runner.range_url)
pulumi.export("proxy_url", runner.proxy_url)
pulumi.export("backfill_workflow", runner.backfill_workflow)
pulumi.export("runs_bucket", runner.runs_bucket_name)
