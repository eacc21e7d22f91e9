"""The configuration hash chain against an independent recomputation of flexiManage's side."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from agent.jobs.signature import SIGNED, advance
from agent.jobs.wirejson import WireFloat, canonical, loads


def controller_hash(previous: str, task: dict[str, Any]) -> str:
    """flexiManage's deviceLogic/sync.js rule, restated independently of the agent:
    SHA1(previous + json-stable-stringify(task)) with sorted keys and no whitespace."""
    text = json.dumps(task, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha1((previous + text).encode("utf-8")).hexdigest()


def test_the_documents_worked_example() -> None:
    remove = {"entity": "agent", "message": "remove-tunnel", "params": {"tunnel-id": 7}}
    modify = {"entity": "agent", "message": "modify-tunnel",
              "params": {"tunnel-id": 7, "peer": {"ips": ["8.8.8.8"], "urls": []}}}
    first = advance("", remove)
    assert first == "a28b0cc08937f32de37c8943c5c174b43353c381"
    assert advance(first, modify) == "5cf6325db7500475cb68fb6f3715e358be8ed5e8"


def test_a_sequence_of_jobs_matches_the_controllers_chain() -> None:
    jobs = [
        {"entity": "agent", "message": "add-interface",
         "params": {"dev_id": "pci:0000:00:03.00", "type": "WAN", "addr": "192.0.2.10/24"}},
        {"entity": "agent", "message": "aggregated", "params": {"requests": [
            {"entity": "agent", "message": "add-route",
             "params": {"addr": "10.9.0.0/16", "via": "10.100.0.17"}},
            {"entity": "agent", "message": "add-tunnel",
             "params": {"tunnel-id": 7, "peer": {"addr": "10.100.0.16/31", "mtu": 1500}}}]}},
        {"entity": "agent", "message": "add-notifications-config",
         "params": {"org": "o1", "rules": {"Link/Tunnel round trip time": {
             "warningThreshold": 300, "criticalThreshold": 600, "thresholdUnit": "ms"}}}},
        {"entity": "agent", "message": "modify-tunnel",
         "params": {"tunnel-id": 7, "notificationsSettings": {"Link/Tunnel round trip time": {
             "warningThreshold": 150, "criticalThreshold": 450, "thresholdUnit": "ms"}}}},
        {"entity": "agent", "message": "add-tunnel",
         "params": {"tunnel-id": 8, "ikev2": {"remote-device-id": "gw.\u00e9xample.net"}}},
    ]
    ours = theirs = ""
    for job in jobs:
        ours = advance(ours, job)
        theirs = controller_hash(theirs, job)
        assert ours == theirs


def test_a_float_keeps_the_text_the_controller_hashed() -> None:
    """JavaScript writes 0.00001 where Python would write 1e-05."""
    wire = '{"entity":"agent","message":"add-notifications-config","params":{"t":0.00001}}'
    msg = loads(wire)
    assert isinstance(msg["params"]["t"], WireFloat)
    assert canonical(msg) == wire
    assert advance("", msg) == hashlib.sha1(wire.encode()).hexdigest()


def test_canonical_writes_locally_made_floats_like_javascript() -> None:
    assert canonical({"b": 1.0, "a": 2.5, "c": 1e-7, "d": 1e21}) == \
        '{"a":2.5,"b":1,"c":1e-7,"d":1e+21}'


def test_a_lone_surrogate_is_hashed_as_json_stringify_writes_it() -> None:
    # Node: JSON.stringify({d: "a\ud800b", e: "\ud83d\ude00"}) escapes the lone one only
    msg = loads('{"entity":"agent","message":"add-route","params":'
                '{"d":"a\\ud800b","e":"\\ud83d\\ude00"}}')
    text = '{"entity":"agent","message":"add-route","params":{"d":"a\\ud800b","e":"\U0001f600"}}'
    assert canonical(msg) == text
    assert advance("", msg) == hashlib.sha1(text.encode()).hexdigest()


def test_msg_without_params_or_entity_is_hashed_as_received() -> None:
    msg = {"message": "modify-vxlan-config", "params": {"port": "4790"}}
    assert advance("x", msg) == controller_hash("x", msg)


def test_signed_set() -> None:
    for name in ("aggregated", "start-router", "stop-router", "add-routing-general",
                 "remove-routing-general", "modify-interface", "add-notifications-config"):
        assert name in SIGNED
    for name in ("sync-device", "get-device-info", "reset-device", "upgrade-device-sw",
                 "exec_timeout", "modify-route", "set-cpu-info"):
        assert name not in SIGNED


WIRE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text()
    | st.floats(allow_nan=False, allow_infinity=False).map(lambda f: WireFloat(repr(f))),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=30,
)


def _dicts(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, dict):
        return [value, *(d for v in value.values() for d in _dicts(v))]
    if isinstance(value, list):
        return [d for v in value for d in _dicts(v)]
    return []


@given(st.dictionaries(st.text(), WIRE, max_size=5), st.data())
def test_known_texts_of_inner_dicts_change_nothing(value: dict[str, Any],
                                                   data: st.DataObject) -> None:
    """A job hashed with its params' texts made beforehand hashes as it would alone."""
    inner = _dicts(value)
    picked = data.draw(st.lists(st.sampled_from(inner), max_size=len(inner)))
    known = {id(d): canonical(d) for d in picked}
    assert canonical(value, known) == canonical(value)
    assert advance("h", value, known) == advance("h", value)


async def test_commit_prep_hashes_the_job_and_writes_its_items_as_alone() -> None:
    from agent.jobs.cfgstore import difference
    from agent.jobs.dispatch import CommitPrep

    params = [{"tunnel-id": n, "ikev2": {"psk": f"k{n}", "lifetime": WireFloat("1e-7")}}
              for n in range(3)]
    job = {"entity": "agent", "message": "aggregated",
           "params": {"requests": [{"entity": "agent", "message": "add-tunnel", "params": p}
                                   for p in params]}}
    new = {f"tunnel:{n}": ("add-tunnel", p) for n, p in enumerate(params)}
    old = {"tunnel:0": ("add-tunnel", params[0])}  # unchanged: not rewritten
    prep = CommitPrep(old, new, "prev", job)
    prep.run()
    assert await prep.result() == (difference(old, new), advance("prev", job))
