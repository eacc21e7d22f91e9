"""The organisation token never travels on the command line (ps shows arguments)."""

from __future__ import annotations

import pytest

from agent.main import build_parser


def test_register_has_no_token_argument() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["register", "--token", "eyJorg.x.y"])
    args = build_parser().parse_args(["register", "--token-file", "/run/org.token"])
    assert str(args.token_file) == "/run/org.token"
