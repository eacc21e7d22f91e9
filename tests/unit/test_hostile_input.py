"""Hostile or unlucky input: a PSK pasted elsewhere, lone surrogates, weak RFC 5114
groups, absurd nesting, a state dir left world-readable."""

from __future__ import annotations

import copy
import json
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.jobs.validation import (
    JobRejected,
    Problem,
    ValidationPolicy,
    normalize_add_tunnel,
    pasted_psk_problems,
)
from agent.jobs.validation.problems import candidates, long_values
from agent.link.envelope import Rejected, parse_frame
from agent.peers.store import PeerStore
from tests.fixtures import example_request
from tests.unit.test_jobs_dispatch import job, make, run

DIGIT_PSK = "4711471147114711"  # a PSK that is also a valid number


def _params(**ikev2: Any) -> dict[str, Any]:
    params: dict[str, Any] = copy.deepcopy(example_request()["params"])
    params["ikev2"].update(ikev2)
    return params


def _refusal(params: dict[str, Any], policy: ValidationPolicy | None = None) -> JobRejected:
    with pytest.raises(JobRejected) as info:
        normalize_add_tunnel(params, policy or ValidationPolicy())
    return info.value


def _everything(exc: JobRejected) -> str:
    return "\n".join([str(exc), repr(exc.args), exc.message,
                      *(f"{p.field} {p.value} {p.reason} {p.allowed}" for p in exc.problems)])


@pytest.mark.parametrize("where", ["dev_id", "srcPort", "tunnel-id", "ike.key-size",
                                   "esp.key-size", "lifetime", "remote-device-id", "ips"])
@pytest.mark.parametrize("as_number", [False, True])
def test_a_psk_pasted_into_another_field_is_refused_and_never_echoed(
        where: str, as_number: bool) -> None:
    params = _params(psk=DIGIT_PSK)
    value: Any = int(DIGIT_PSK) if as_number else DIGIT_PSK
    if where.startswith(("ike.", "esp.")):
        part, key = where.split(".")
        params["ikev2"][part][key] = value
    elif where in ("lifetime", "remote-device-id"):
        params["ikev2"][where] = value
    elif where == "ips":
        params["peer"]["ips"] = [value]
    else:
        params[where] = value
    exc = _refusal(params)
    assert DIGIT_PSK not in _everything(exc)
    assert "******" in exc.message


def test_a_psk_used_as_dev_id_is_refused_before_it_reaches_vpp_or_the_logs() -> None:
    params = _params(psk="Top-Secret-Key-4711")
    params["dev_id"] = "Top-Secret-Key-4711"
    exc = _refusal(params)
    assert exc.message == ("dev_id: '******': contains the pre-shared key; "
                           "allowed: a value that does not contain ikev2.psk")


def test_a_psk_with_a_lone_surrogate_is_refused_normally() -> None:
    exc = _refusal(_params(psk="abc\ud800defghijkl"))
    assert exc.message.startswith("ikev2.psk: 15 bytes: not valid Unicode text (a lone "
                                  "surrogate)")


@pytest.mark.parametrize("group", ["modp-1024-160", "modp-2048-224"])
def test_rfc5114_groups_22_and_23_are_weak(group: str) -> None:
    params = _params()
    params["ikev2"]["ike"]["dh-group"] = group
    exc = _refusal(params)
    assert "weak, refused by the device's security policy" in exc.message
    spec = normalize_add_tunnel(params, ValidationPolicy(allow_weak_crypto=True))
    assert spec.ike.dh_group in (22, 23)


def test_a_5000_deep_valid_job_gets_an_addressed_refusal() -> None:
    deep = "[" * 5000 + "]" * 5000
    frame = ('{"seq": "41", "jobid": 9, "msg": {"entity": "agent", "message": "add-tunnel",'
             f' "params": {{"x": {deep}}}}}}}')
    json.loads(frame.replace(deep, "[]"))  # the frame is valid JSON apart from its depth
    out = parse_frame(frame)
    assert isinstance(out, Rejected) and out.seq == "41"
    assert "deeper than 64" in out.reason


def test_a_world_readable_state_dir_is_tightened(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    os.chmod(state, 0o755)
    PeerStore(state).close()
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o700


async def test_one_peers_psk_pasted_into_another_request_of_the_job(tmp_path: Path) -> None:
    first = _params(psk="Top-Secret-Key-4711")
    second = _params(psk="Integration-PSK-never-logged")
    second["tunnel-id"] = 8
    second["dev_id"] = "Top-Secret-Key-4711"
    d, mgr = make(tmp_path)

    def sync(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        return job("sync-device", {"requests": [
            {"entity": "agent", "message": "add-tunnel", "params": a},
            {"entity": "agent", "message": "add-tunnel", "params": b}]})

    outcome = await run(d, sync(first, second))
    assert not outcome.ok and outcome.message == (
        "requests[1].params.dev_id: '******': contains the pre-shared key; allowed: a value "
        "that does not contain ikev2.psk")
    assert mgr.synced == []  # refused before anything was applied
    # the same PSK for a redundant pair is fine
    second["dev_id"], second["ikev2"]["psk"] = first["dev_id"], "Top-Secret-Key-4711"
    assert (await run(d, sync(first, second))).ok
    assert [s.tunnel_id for s in mgr.synced[-1]] == [7, 8]


def test_a_job_wide_psk_check_names_each_pasted_value_once() -> None:
    """Values already refused (and everything under them) are not reported again; every
    other value holding any of the job's PSKs is, in the job's order."""
    a, b = "Alpha-Key-0001", "Bravo-Key-0002"
    params = {"requests": [
        {"params": {"ikev2": {"psk": a}, "dev_id": f"x{b}", "peer": {"urls": [a, "ok"]}}},
        {"params": {"ikev2": {"psk": b}, "dev_id": "fine", "note": 4711}},
    ]}
    known = [Problem("requests[0].params.peer", "'******'", "refused already")]
    found = pasted_psk_problems(params, known)
    assert [p.field for p in found] == ["requests[0].params.dev_id"]
    assert all(a not in str(p) and b not in str(p) for p in found)
    assert pasted_psk_problems({"requests": [{"params": {"ikev2": {"psk": a}}}]}) == []


def test_the_psk_prefilter_keeps_every_psk_the_text_contains() -> None:
    secrets = ["Alpha-Key-0001", "Bravo-K", "Charlie-Key-3", "Delta"]
    texts = ["x", "Bravo-Kilo", "zzDelta", "Charlie-Ke"]
    kept = candidates(secrets, texts, 5)
    assert {s for s in secrets if any(s in t for t in texts)} == {"Bravo-K", "Delta"}
    assert set(kept) == {"Bravo-K", "Delta", "Charlie-Key-3"}  # "Charl" occurs: a candidate
    assert candidates(secrets, [], 5) == [] and candidates([], texts, 5) == []


def test_only_values_long_enough_to_hold_a_psk_are_screened_and_never_the_psk_itself() -> None:
    params = {"requests": [{"params": {"ikev2": {"psk": "P" * 30, "id": "x" * 12},
                                       "peer": {"ips": ["10.0.0.1", "y" * 20]},
                                       "mtu": 123456789012, "up": True}}]}
    assert sorted(long_values(params, 12)) == sorted(["x" * 12, "y" * 20, "123456789012"])
    assert long_values(params, 21) == []


def _long_values_by_path(value: object, k: int, key: object = None) -> list[str]:
    """The screen's contract, walked plainly: every scalar as text, if long enough,
    except a `psk` right under a mapping reached by the key `ikev2`."""
    if isinstance(value, str):
        return [value] if len(value) >= k else []
    if isinstance(value, Mapping):
        return [t for name, v in value.items() if not (key == "ikev2" and name == "psk")
                for t in _long_values_by_path(v, k, name)]
    if isinstance(value, list):
        return [t for v in value for t in _long_values_by_path(v, k)]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return [str(value)] if len(str(value)) >= k else []
    return []


_KEYS = st.sampled_from(["ikev2", "psk", "peer", "id", "x"])
_JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-10**15, 10**15) | st.floats(allow_nan=False)
    | st.text(alphabet="ab", max_size=8),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(_KEYS, inner, max_size=4)
    | st.dictionaries(_KEYS, inner, max_size=4).map(MappingProxyType),
    max_leaves=30)


@given(_JSONISH, st.integers(1, 6))
def test_the_long_value_screen_finds_what_a_plain_walk_finds(value: object, k: int) -> None:
    assert sorted(long_values(value, k)) == sorted(_long_values_by_path(value, k))
