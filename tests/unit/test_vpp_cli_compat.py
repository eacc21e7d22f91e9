"""The seed's IKE debugging spellings become VPP 26.06 commands, with a note."""

from __future__ import annotations

import pytest

from agent.vpp.cli_compat import shows_sa_details, translate_cli


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


@pytest.mark.parametrize("cmd,crashes", [
    ("show ikev2 sa details", True),
    ("sh ike sa details", True),  # VPP takes unique prefixes of command words
    ("show ikev2 sa rspi 1f details", True),
    ("show ikev2 sa detailsx", True),  # its parser takes any word starting "details"
    ("SHOW IKEV2 SA DETAILS", True),
    ("show ikev2 sa", False),  # the plain listing reads no profile
    ("show ikev2 sa rspi 1f", False),
    ("show ikev2 sa det", False),  # "det" is not "details" to VPP's parser
    ("show ikev2 profile details", False),
    ("show interface details", False),
    ("set ikev2 sa details", False),
    ("", False),
])
def test_the_sa_listing_that_crashes_vpp_is_recognised_however_spelled(
        cmd: str, crashes: bool) -> None:
    assert shows_sa_details(cmd) is crashes
