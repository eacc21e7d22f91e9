"""Peer specs as stored: exact round trip and the configuration hash."""

from __future__ import annotations

from dataclasses import replace

from agent.peers.codec import cfg_hash, spec_from_dict, spec_to_dict
from tests.spec_factory import example_spec, numbered_spec


def test_codec_round_trip_is_exact() -> None:
    spec = example_spec()
    assert spec_from_dict(spec_to_dict(spec)) == spec


def test_cfg_hash_is_deterministic_and_sensitive() -> None:
    a, b = numbered_spec(1), numbered_spec(2)
    assert cfg_hash([a, b]) == cfg_hash([b, a])
    assert cfg_hash([a]) != cfg_hash([a, b])
    assert cfg_hash([a]) != cfg_hash([replace(a, child_lifetime=7200)])
    assert len(cfg_hash([])) == 64
