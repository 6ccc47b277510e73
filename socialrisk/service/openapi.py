"""Write the service's OpenAPI schema (``docs/openapi.json`` is committed; a test keeps it in step).

    .venv/bin/python -m socialrisk.service.openapi [PATH]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from socialrisk.service.app import create_app
from socialrisk.service.auth import ApiKeys
from socialrisk.settings import Settings

__all__ = ["schema", "main"]

DEFAULT_PATH = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


def schema() -> dict[str, Any]:
    """The schema the service serves at ``/openapi.json`` (nothing is started)."""
    schema: dict[str, Any] = create_app(Settings(), "embedded", "/nonexistent", keys=ApiKeys(())).openapi()
    return schema


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0]) if args else DEFAULT_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(schema(), indent=2, sort_keys=True) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
