"""vppsim's acl and abf plugins: VPP 26.06's return codes and state, over the wire."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from vppsim_rawclient import RawClient

from agent.lab.vppsim.server import VppSim

NO_INDEX = 0xFFFFFFFF
NO_SUCH_ENTRY, INVALID_VALUE, INVALID_VALUE_2 = -6, -7, -8
INVALID_SRC_ADDRESS, ENTRY_ALREADY_EXISTS, ACL_IN_USE_BY_LOOKUP_CONTEXT = -57, -116, -149


async def call(c: RawClient, msg: str, /, **fields: Any) -> Any:
    c.send(msg, context=7, **fields)
    return await c.recv()


async def dump(c: RawClient, msg: str, /, **fields: Any) -> list[Any]:
    c.send(msg, context=9, **fields)
    c.send("control_ping", context=9)
    out = []
    while True:
        m = await c.recv()
        if type(m).__name__ == "control_ping_reply":
            return out
        out.append(m)


@pytest.fixture
async def raw(sim: VppSim) -> Any:
    c = RawClient(sim.catalog)
    await c.connect(str(sim.socket_path))
    yield c
    await c.close()


def rule(dst: str = "10.9.0.0/16", src: str = "0.0.0.0/0", **kw: Any) -> dict[str, Any]:
    return {"is_permit": 1, "src_prefix": src, "dst_prefix": dst, "proto": 0,
            "srcport_or_icmptype_first": 0, "srcport_or_icmptype_last": 65535,
            "dstport_or_icmpcode_first": 0, "dstport_or_icmpcode_last": 65535} | kw


def path(sw_if_index: int = 1, nh: str = "192.168.1.1", type_: int = 0) -> dict[str, Any]:
    return {"sw_if_index": sw_if_index, "table_id": 0, "weight": 1, "type": type_, "proto": 0,
            "nh": {"address": {"ip4": nh}}, "label_stack": [{}] * 16}


async def add_acl(c: RawClient, tag: str = "t", index: int = NO_INDEX,
                  rules: list[dict[str, Any]] | None = None) -> Any:
    rs = [rule()] if rules is None else rules
    return await call(c, "acl_add_replace", acl_index=index, tag=tag, count=len(rs), r=rs)


async def policy(c: RawClient, is_add: bool, pid: int, acl: int,
                 paths: list[dict[str, Any]]) -> Any:
    return await call(c, "abf_policy_add_del", is_add=is_add,
                      policy={"policy_id": pid, "acl_index": acl, "n_paths": len(paths),
                              "paths": paths})


async def attach(c: RawClient, is_add: bool, pid: int, itf: int, prio: int = 10) -> Any:
    return await call(c, "abf_itf_attach_add_del", is_add=is_add,
                      attach={"policy_id": pid, "sw_if_index": itf, "priority": prio,
                              "is_ipv6": False})


async def test_acl_indexes_replace_and_dump(raw: RawClient) -> None:
    a, b = await add_acl(raw, "a"), await add_acl(raw, "b")
    assert (a.retval, a.acl_index, b.acl_index) == (0, 0, 1)
    rep = await add_acl(raw, "a2", index=0, rules=[rule("10.1.0.0/16"), rule("10.2.0.0/16")])
    assert (rep.retval, rep.acl_index) == (0, 0)
    details = await dump(raw, "acl_dump", acl_index=NO_INDEX)
    assert [(d.acl_index, d.tag, d.count) for d in details] == [(0, "a2", 2), (1, "b", 1)]
    assert details[0].r[1].dst_prefix == ipaddress.ip_network("10.2.0.0/16")
    assert [d.acl_index for d in await dump(raw, "acl_dump", acl_index=1)] == [1]
    assert await dump(raw, "acl_dump", acl_index=7) == []
    # the most recently freed index is reused first (VPP's pool)
    assert (await call(raw, "acl_del", acl_index=0)).retval == 0
    assert (await call(raw, "acl_del", acl_index=1)).retval == 0
    assert (await add_acl(raw)).acl_index == 1
    assert (await add_acl(raw)).acl_index == 0
    assert (await add_acl(raw)).acl_index == 2


async def test_acl_errors_change_nothing(raw: RawClient, sim: VppSim) -> None:
    missing = await add_acl(raw, index=5)
    assert (missing.retval, missing.acl_index) == (NO_SUCH_ENTRY, 5)
    assert (await call(raw, "acl_del", acl_index=5)).retval == NO_SUCH_ENTRY
    bad_ports = await add_acl(raw, rules=[rule(dstport_or_icmpcode_first=90,
                                               dstport_or_icmpcode_last=80)])
    assert (bad_ports.retval, bad_ports.acl_index) == (INVALID_VALUE_2, NO_INDEX)
    mixed = await add_acl(raw, rules=[rule(src="2001:db8::/32")])
    assert mixed.retval == INVALID_SRC_ADDRESS
    # 63 bytes is the longest tag that fits VPP's 64-byte field (papi refuses longer)
    assert (await add_acl(raw, tag="x" * 63, index=5)).retval == NO_SUCH_ENTRY
    assert (await add_acl(raw, rules=[])).retval == 0  # an empty ACL is allowed
    assert sim.handlers.acl_abf.state.snapshot()["acls"] == {0: ("t", 0)}


async def test_abf_policy_paths_and_errors(raw: RawClient) -> None:
    acl = (await add_acl(raw)).acl_index
    assert (await policy(raw, True, 7, acl, [])).retval == INVALID_VALUE  # n_paths 0
    assert (await policy(raw, False, 7, acl, [path()])).retval == INVALID_VALUE  # no policy
    assert (await policy(raw, True, 7, acl, [path(1, "192.168.1.1")])).retval == 0
    assert (await policy(raw, True, 7, acl, [path(type_=2)])).retval == 0
    # another ACL for an existing policy is refused
    assert (await policy(raw, True, 7, acl + 1, [path()])).retval == INVALID_VALUE
    (d,) = await dump(raw, "abf_policy_dump")
    assert (d.policy.policy_id, d.policy.acl_index, d.policy.n_paths) == (7, acl, 2)
    types = sorted((int(p.type), p.sw_if_index) for p in d.policy.paths)
    assert types == [(0, 1), (2, NO_INDEX)]  # a drop path comes back with sw_if_index ~0
    # removing the last path deletes the policy
    assert (await policy(raw, False, 7, acl, [path(type_=2)])).retval == 0
    assert len((await dump(raw, "abf_policy_dump"))[0].policy.paths) == 1
    assert (await policy(raw, False, 7, acl, [path()])).retval == 0
    assert await dump(raw, "abf_policy_dump") == []


async def test_a_path_added_twice_poisons_the_policy_as_on_real_vpp(raw: RawClient) -> None:
    acl = (await add_acl(raw)).acl_index
    assert (await policy(raw, True, 7, acl, [path()])).retval == 0
    assert (await policy(raw, True, 7, acl, [path()])).retval == 0  # VPP says 0 too...
    assert len((await dump(raw, "abf_policy_dump"))[0].policy.paths) == 1
    # ... and crashes on the next change: vppsim refuses it instead
    assert (await policy(raw, True, 7, acl, [path(nh="192.168.1.2")])).retval == -1
    assert (await policy(raw, True, 8, acl, [path()])).retval == 0  # other policies: fine


async def test_attachments_and_acl_in_use(raw: RawClient) -> None:
    acl = (await add_acl(raw)).acl_index
    assert (await policy(raw, True, 7, acl, [path()])).retval == 0
    assert (await attach(raw, True, 9, 1)).retval == NO_SUCH_ENTRY  # no policy 9
    assert (await attach(raw, True, 7, 1, prio=20)).retval == 0
    assert (await attach(raw, True, 7, 1, prio=30)).retval == ENTRY_ALREADY_EXISTS
    assert (await attach(raw, False, 7, 2)).retval == NO_SUCH_ENTRY
    (d,) = await dump(raw, "abf_itf_attach_dump")
    assert (d.attach.policy_id, d.attach.sw_if_index, d.attach.priority, d.attach.is_ipv6) == (
        7, 1, 20, False)
    # an attachment holds the ACL through its lookup context; the policy alone does not
    assert (await call(raw, "acl_del", acl_index=acl)).retval == ACL_IN_USE_BY_LOOKUP_CONTEXT
    assert (await attach(raw, False, 7, 1)).retval == 0
    assert await dump(raw, "abf_itf_attach_dump") == []
    assert (await call(raw, "acl_del", acl_index=acl)).retval == 0


async def test_writes_are_counted_and_injectable(raw: RawClient, sim: VppSim) -> None:
    before = sim.write_count
    await add_acl(raw)
    assert sim.write_count == before + 1
    sim.inject_failure("abf_policy_add_del", retval=-99)
    assert (await policy(raw, True, 7, 0, [path()])).retval == -99
    assert await dump(raw, "abf_policy_dump") == []


async def test_paths_through_a_deleted_interface(raw: RawClient) -> None:
    tun = await call(raw, "ipip_add_tunnel", tunnel={
        "instance": 3, "src": "192.168.1.10", "dst": "203.0.113.3", "table_id": 0,
        "mode": 0})
    itf = tun.sw_if_index
    acl = (await add_acl(raw)).acl_index
    assert (await policy(raw, True, 7, acl, [path(itf, "10.100.0.1"), path()])).retval == 0
    assert (await call(raw, "ipip_del_tunnel", sw_if_index=itf)).retval == 0
    # the path stays; naming the deleted interface is refused by the path decoder
    (d,) = await dump(raw, "abf_policy_dump")
    assert sorted(p.sw_if_index for p in d.policy.paths) == [1, itf]
    assert (await policy(raw, False, 7, acl, [path(itf, "10.100.0.1")])).retval == -54
    # any other change of this policy would crash real VPP: refused
    assert (await policy(raw, False, 7, acl, [path()])).retval == -1
    assert (await policy(raw, True, 7, acl, [path(nh="192.168.1.9")])).retval == -1
