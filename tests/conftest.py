import sys
from pathlib import Path

# Make `tests.serving` and the `localcloud` package importable from any test module.
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
