"""The README stays true: every configuration key is documented with its default."""

from __future__ import annotations

from pathlib import Path

from agent.config import config_reference_markdown

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_documents_every_configuration_key() -> None:
    assert config_reference_markdown().rstrip("\n") in README.read_text()


def test_readme_names_exactly_the_two_setup_commands() -> None:
    text = README.read_text()
    setup = text.split("## Set-up on a fresh Debian machine", 1)[1].split("\n## ", 1)[0]
    commands = [line.strip() for line in setup.splitlines() if line.startswith("    ")]
    assert commands == ["scripts/demo.sh", "scripts/test.sh"]
    ci = (README.parent / ".ci" / "run").read_text()
    assert "scripts/test.sh" in ci
