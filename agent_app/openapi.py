"""Write the committed OpenAPI document: ``python -m agent_app.openapi [--check]``.

The document is generated from the app itself, so it cannot drift from the code; a test
fails when the committed copy is stale, and schemathesis fuzzes the api against it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OPENAPI_FILE = Path(__file__).with_name("openapi.json")


def document() -> dict[str, Any]:
    from agent_app.app import create_app

    return create_app().openapi()


def render() -> str:
    return json.dumps(document(), indent=2, sort_keys=True) + "\n"


def main() -> None:
    text = render()
    if "--check" in sys.argv:
        if OPENAPI_FILE.read_text() != text:
            print(f"{OPENAPI_FILE} is stale: run python -m agent_app.openapi", file=sys.stderr)
            raise SystemExit(1)
        return
    OPENAPI_FILE.write_text(text)
    print(f"wrote {OPENAPI_FILE}")


if __name__ == "__main__":
    main()
