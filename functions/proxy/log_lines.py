"""Structured log lines besides the one per request (main._write_log): what an operator must
see on its own, as Cloud Logging reads a JSON line on stdout (severity, message, fields:
https://cloud.google.com/logging/docs/structured-logging)."""
from __future__ import annotations

import json
import sys


def warning(message: str, **fields) -> None:
    _write("WARNING", message, fields)


def info(message: str, **fields) -> None:
    _write("INFO", message, fields)


def _write(severity: str, message: str, fields: dict) -> None:
    sys.stdout.write(json.dumps({"severity": severity, "message": message, **fields}) + "\n")
    sys.stdout.flush()
