"""Serve a function folder with functions-framework on a free loopback port, for real-HTTP tests.

Each function runs in its own process (two `main.py` files cannot share one interpreter under
functions-framework); the code lives in localcloud.stack, which the local stack uses too.
`load_module` reads one module of a function in process instead, for tests that need no server.
"""
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from localcloud.stack import ROOT, free_port, serve_function, wait_for_port  # noqa: F401

FUNCTIONS = ROOT / "functions"


def load_module(function: str, name: str) -> ModuleType:
    """functions/<function>/<name>.py, loaded by path as `<function>_<name>`: the functions deploy
    alone and are not a package, and two of them may each have a module of the same name."""
    folder = FUNCTIONS / function
    spec = importlib.util.spec_from_file_location(f"{function}_{name}", folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # as importlib's own recipe does: dataclasses look their module up there
    before = set(sys.modules)
    sys.path.insert(0, str(folder))  # its own imports of sibling modules, as when it is deployed
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(folder))
        # Those siblings stay the module's own: another function's module of the same name loads afresh.
        for loaded in set(sys.modules) - before:
            if Path(getattr(sys.modules[loaded], "__file__", None) or "/").parent == folder:
                del sys.modules[loaded]
    return module
