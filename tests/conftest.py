import sys
import zoneinfo
from pathlib import Path

# Make `tests.serving` and the `localcloud` package importable from any test module.
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# The tests' own oracles read the same time-zone data as every piece they check: the pinned tzdata.
zoneinfo.reset_tzpath(to=[])
