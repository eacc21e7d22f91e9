"""The seed's IKE debugging spellings become VPP 26.06 commands, with a note."""

from __future__ import annotations

import pytest

from agent.vpp.cli_compat import translate_cli


@pytest.mark.parametrize("old,new", [
    ("ikev2 set logging level 0", "set logging class ikev2 level disabled"),
    ("ikev2 set logging level 1", "set logging class ikev2 level error"),
    ("ikev2 set logging level 2", "set logging class ikev2 level warn"),
    ("ikev2 set logging level 5", "set logging class ikev2 level debug"),
    ("event-logger clear", "clear logging"),
    ("show event-logger", "show logging"),
    ("show  event-logger 100", "show logging"),
])
def test_seed_spellings_are_translated_and_said(old: str, new: str) -> None:
    cmd, note = translate_cli(old)
    assert cmd == new
    assert note is not None and f"ran '{new}' instead" in note and "26.06" in note


@pytest.mark.parametrize("cmd", ["show ikev2 sa details", "ikev2 set logging level 6",
                                 "ikev2 set logging level x", "show logging"])
def test_other_commands_pass_unchanged(cmd: str) -> None:
    assert translate_cli(cmd) == (cmd, None)
