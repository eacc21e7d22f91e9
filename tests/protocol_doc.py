"""The controller protocol document's own examples, parsed from ../shared."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PROTOCOL_DOC = Path(__file__).resolve().parents[2] / "shared/reference/controller-protocol.md"


def example_request() -> dict[str, Any]:
    """The document's complete add-tunnel example (entity, message, params), parsed from it."""
    section = PROTOCOL_DOC.read_text().split("## add-tunnel for a peer: a complete example", 1)[1]
    block: list[str] = []
    for line in section.splitlines()[1:]:
        if not line.strip() and block:
            break
        if line.startswith("    "):
            block.append(line[4:])
    request: dict[str, Any] = json.loads("\n".join(block))
    return request
