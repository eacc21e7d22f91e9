"""The project's protocol fixtures have the shapes of the reference's own examples.

Optional tier: it reads ../shared/reference/controller-protocol.md (beside the
repository on development machines and in CI) and skips, saying so, without it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures import example_request

REFERENCE = Path(__file__).resolve().parents[3] / "shared/reference/controller-protocol.md"
pytestmark = pytest.mark.skipif(
    not REFERENCE.is_file(), reason=f"reference tier: {REFERENCE} absent (needs ../shared)")


def reference_add_tunnel() -> dict[str, Any]:
    """The add-tunnel example of section 8.1 (the first json block after its heading)."""
    section = REFERENCE.read_text().split("### 8.1 `add-tunnel` for a peer", 1)[1]
    block = re.search(r"```json\n(.*?)```", section, re.DOTALL)
    assert block is not None, "section 8.1 has no json example"
    doc: dict[str, Any] = json.loads(block.group(1))
    return doc


def shape(value: Any) -> Any:
    """Keys and JSON types, recursively (list items are strings in this message)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        assert all(isinstance(v, str) for v in value), value
        return "list"
    return type(value).__name__


def test_the_add_tunnel_fixture_has_the_reference_example_shape() -> None:
    ours, theirs = shape(example_request()), shape(reference_add_tunnel())
    assert ours == theirs
