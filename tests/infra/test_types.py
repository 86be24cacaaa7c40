"""pyright checks the code (infra against the real provider SDKs' types, and the app, the
CLI and the policy pack) with the project's configuration in pyproject.toml."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_pyright_is_clean() -> None:
    pyright = shutil.which("pyright") or str(ROOT / ".venv" / "bin" / "pyright")
    result = subprocess.run([pyright], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:]
    assert "0 errors" in result.stdout
