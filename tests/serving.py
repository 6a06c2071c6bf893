"""Serve a function folder with functions-framework on a free loopback port, for real-HTTP tests.

Each function runs in its own process (two `main.py` files cannot share one interpreter under
functions-framework); the code lives in localcloud.stack, which the local stack uses too.
"""
from localcloud.stack import ROOT, free_port, serve_function, wait_for_port  # noqa: F401

FUNCTIONS = ROOT / "functions"
