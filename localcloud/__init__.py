"""localcloud: Google's part of workflows-runner, played on loopback.

A Cloud Workflows engine, the Workflows Executions v1 REST API over SQLite, and a Cloud Scheduler,
so that the real functions and the real `workflows/*.yaml` run end to end without Google.

Data flows one way:
    loader (YAML -> checked workflow) -> expressions (parse once, evaluate many)
    -> runtime (steps, scopes, parallel, try/retry) -> stdlib (json, map, text, time, http, ...)
    api (HTTP, SQLite) <-> runtime;  scheduler (cron -> HTTP POST);  __main__ (CLI)
"""
