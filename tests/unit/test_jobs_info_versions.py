"""The FRR version the device reports (`versions.frr` of get-device-info)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from agent.jobs.info import detect_frr_version, parse_vtysh_version


@pytest.mark.parametrize("text,version", [
    ("vtysh 9.1.1\nCopyright 1996-2005 ...", "9.1.1"),
    ("FRRouting 10.2.1-dev (edge) on Linux", "10.2.1"),
    ("Usage : vtysh [OPTION...]\n\nIntegrated shell for FRR (version 8.4.4). \n", "8.4.4"),
    ("vtysh: unrecognized option '--version'\nTry `vtysh --help'", None),
])
def test_the_version_is_read_from_vtyshs_words(text: str, version: str | None) -> None:
    assert parse_vtysh_version(text) == version


def test_a_vtysh_without_version_option_is_asked_for_help(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Debian 12's vtysh (8.4.4) refuses --version; its --help names the version."""
    fake = tmp_path / "vtysh"
    fake.write_text('#!/bin/sh\n'
                    'if [ "$1" = --version ]; then echo "vtysh: unrecognized option" >&2; '
                    'exit 1; fi\n'
                    'echo "Integrated shell for FRR (version 8.4.4). "\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert detect_frr_version("7.0") == "8.4.4"
    monkeypatch.setenv("PATH", str(tmp_path / "none"))
    assert detect_frr_version("7.0") == "7.0"


@pytest.mark.skipif(shutil.which("vtysh") is None, reason="FRR is not installed")
def test_the_installed_frr_reports_its_version() -> None:
    assert detect_frr_version("fallback") != "fallback"
