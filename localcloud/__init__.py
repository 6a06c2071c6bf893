"""localcloud: Google's part of workflows-runner, played on loopback.

A Cloud Workflows engine, the Workflows Executions v1 REST API over SQLite, and a Cloud Scheduler,
so that the real functions and the real `workflows/*.yaml` run end to end without Google.

Data flows one way:
    loader (YAML -> model, the step tree; checks: what a deploy refuses)
    -> expressions (parse once, evaluate many; values: type rules)
    -> runtime (steps, scopes, parallel, try/retry) -> stdlib (json, map, text, time, http, ...)
    api (HTTP, SQLite) <-> runtime;  scheduler (cron -> HTTP POST);  __main__ (CLI)
    google_http: what every local server shares (Google's error shape, JSON, bearer, RFC 3339)
"""
import zoneinfo

# One time-zone database for every piece (docs/range.md#time-zone-data): the pinned tzdata package,
# never the host's zoneinfo, which Python would read first. Here, before any module of localcloud
# runs (demo.py builds zones at import).
zoneinfo.reset_tzpath(to=[])
