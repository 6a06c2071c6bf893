"""`wfr ui`: the runs grid in the browser (docs/ui.md).

server.py serves it on 127.0.0.1 behind a per-start token; page.py renders HTML from the status
model (workflows_runner.status) and nothing else; actions.py plans and performs the page's
actions with the same code the CLI's commands call. static/ holds the page's stylesheet and
script, shipped as package data: the page needs no network besides the server.
"""
