"""Structured log lines besides the one per request (main._write_log): what an operator must
see on its own, as Cloud Logging reads a JSON line on stdout (severity, message, fields:
https://cloud.google.com/logging/docs/structured-logging)."""
from __future__ import annotations

import json
import sys


def warning(message: str, **fields) -> None:
    sys.stdout.write(json.dumps({"severity": "WARNING", "message": message, **fields}) + "\n")
    sys.stdout.flush()
