"""Entry point the Pulumi engine runs (Pulumi.yaml: main: infra/)."""

import sys
from pathlib import Path

# The engine runs this folder as a script; make the project's packages importable.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from infra.program import run  # noqa: E402

run()
