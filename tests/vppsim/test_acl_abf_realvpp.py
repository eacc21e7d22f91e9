"""Differential: the same acl/abf requests against real VPP 26.06 and vppsim give the
same return codes, indexes and dumps (real-VPP tier: needs VPP 26.06 installed by
scripts/bootstrap.sh, root and network namespaces; skipped at tests/real_vpp.py's gate
otherwise)."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from agent.lab.realvpp import RealVpp
from agent.lab.vppsim.server import VppSim
from agent.vpp.client import VppClient
from agent.vpp.errors import VppError
from tests.real_vpp import require_real_vpp
from tests.waiting import until

NO_INDEX = 0xFFFFFFFF


@pytest.fixture(autouse=True)
def _real_vpp_tier() -> None:
    require_real_vpp()


@pytest.fixture
def real_vpp(short_dir: Path) -> Iterator[Path]:
    """Real VPP with the acl and abf plugins in a namespace of its own; its API socket."""
    ns = f"pa-rv-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    vpp = RealVpp(ns, short_dir, plugins=("acl_plugin.so", "abf_plugin.so"))
    try:
        vpp.start()
        yield vpp.socket_path
    finally:
        vpp.stop()
        subprocess.run(["ip", "netns", "del", ns], check=False)


@pytest.fixture
async def sim_socket(short_dir: Path) -> AsyncIterator[Path]:
    s = VppSim(short_dir / "sim.sock", interfaces=[])
    await s.start()
    try:
        yield s.socket_path
    finally:
        await s.stop()


async def connect(sock: Path) -> VppClient:
    await until(sock.exists, timeout=20)
    c = VppClient(str(sock), call_timeout=5.0)
    await c.start()
    await c.wait_connected(20)
    return c


def rule(dst: str = "10.9.0.0/16", src: str = "0.0.0.0/0", **kw: Any) -> dict[str, Any]:
    return {"is_permit": 1, "src_prefix": src, "dst_prefix": dst, "proto": 0,
            "srcport_or_icmptype_first": 0, "srcport_or_icmptype_last": 65535,
            "dstport_or_icmpcode_first": 0, "dstport_or_icmpcode_last": 65535,
            "tcp_flags_mask": 0, "tcp_flags_value": 0} | kw


def path(sw_if_index: int, nh: str = "10.100.0.1", type_: int = 0) -> dict[str, Any]:
    return {"sw_if_index": sw_if_index, "table_id": 0, "rpf_id": 0, "weight": 1,
            "preference": 0, "type": type_, "flags": 0, "proto": 0,
            "nh": {"address": {"ip4": IPv4Address(nh)}}, "n_labels": 0,
            "label_stack": [{}] * 16}


async def scenario(vpp: VppClient) -> list[Any]:
    """Every observable outcome, in order: retvals, indexes, dumps (normalized)."""
    out: list[Any] = []

    async def call(name: str, **kw: Any) -> Any:
        r = await vpp.call(name, _check=False, **kw)
        out.append((name, r.retval, getattr(r, "acl_index", None)))
        return r

    async def acls() -> None:
        d = await vpp.dump("acl_dump", acl_index=NO_INDEX)
        out.append(("acls", [(int(a.acl_index), str(a.tag), int(a.count),
                              [(str(r.src_prefix), str(r.dst_prefix), int(r.proto),
                                r.dstport_or_icmpcode_first, r.srcport_or_icmptype_first)
                               for r in a.r]) for a in d]))

    async def policies() -> None:
        d = await vpp.dump("abf_policy_dump")
        out.append(("policies", [(int(p.policy.policy_id), int(p.policy.acl_index),
                                  sorted((int(x.type), int(x.sw_if_index), int(x.weight),
                                          str(x.nh.address.ip4) if int(x.type) == 0 else "")
                                         for x in p.policy.paths)) for p in d]))

    async def attachments() -> None:
        d = await vpp.dump("abf_itf_attach_dump")
        out.append(("attachments", [(int(a.attach.policy_id), int(a.attach.sw_if_index),
                                     int(a.attach.priority), bool(a.attach.is_ipv6))
                                    for a in d]))

    def acl(index: int = NO_INDEX, tag: str = "t", rules: list[Any] | None = None) -> Any:
        rs = [rule()] if rules is None else rules
        return call("acl_add_replace", acl_index=index, tag=tag, count=len(rs), r=rs)

    def pol(is_add: bool, pid: int, acl_index: int, paths: list[Any]) -> Any:
        return call("abf_policy_add_del", is_add=is_add,
                    policy={"policy_id": pid, "acl_index": acl_index, "n_paths": len(paths),
                            "paths": paths})

    def att(is_add: bool, pid: int, itf: int, prio: int) -> Any:
        return call("abf_itf_attach_add_del", is_add=is_add,
                    attach={"policy_id": pid, "sw_if_index": itf, "priority": prio,
                            "is_ipv6": False})

    tun = await vpp.call("ipip_add_tunnel", tunnel={
        "instance": 1, "src": IPv4Address("192.0.2.10"), "dst": IPv4Address("203.0.113.1"),
        "table_id": 0, "flags": 0, "mode": 0, "dscp": 0})
    itf = int(tun.sw_if_index)
    await acl(tag="a")
    await acl(tag="b")
    await acl(0, "a2", [rule("10.1.0.0/16"), rule("10.2.0.0/16", proto=6,
                                                   dstport_or_icmpcode_first=443,
                                                   dstport_or_icmpcode_last=443)])
    await acl(5)
    await acl(rules=[rule(dstport_or_icmpcode_first=90, dstport_or_icmpcode_last=80)])
    await acl(rules=[rule(srcport_or_icmptype_first=90, srcport_or_icmptype_last=80)])
    await acl(rules=[rule(src="2001:db8::/32")])
    await acl(tag="empty", rules=[])
    await call("acl_del", acl_index=5)
    await acls()
    out.append(("one", len(await vpp.dump("acl_dump", acl_index=1))))
    out.append(("unknown", len(await vpp.dump("acl_dump", acl_index=9))))
    await pol(True, 7, 0, [])
    await pol(False, 7, 0, [path(itf)])
    await pol(True, 7, 0, [path(itf)])
    await pol(True, 7, 0, [path(itf, "10.100.0.5")])  # never a path twice: VPP then crashes
    await pol(False, 7, 0, [path(itf, "10.100.0.7")])  # removing an absent path: no-op
    await pol(True, 9, 0, [path(NO_INDEX, "0.0.0.0", 2)])  # a drop path first, then others
    await pol(True, 9, 0, [path(itf)])
    await pol(True, 7, 1, [path(itf, "10.100.0.3")])
    await pol(True, 8, 1, [path(itf, "10.100.0.3")])
    await policies()
    await att(True, 7, itf, 20)
    await att(True, 7, itf, 30)
    await att(False, 7, 0, 20)
    await att(True, 8, itf, 5)
    await attachments()
    await call("acl_del", acl_index=0)
    await att(False, 7, itf, 20)
    await call("acl_del", acl_index=0)
    await call("acl_del", acl_index=2)
    await acl(tag="reuse-2")
    await acl(tag="reuse-0")
    await acl(tag="new")
    await acls()
    await pol(False, 9, 0, [path(NO_INDEX, "0.0.0.0", 2)])
    await pol(False, 7, 0, [path(itf, "10.100.0.5")])
    await policies()
    await pol(False, 7, 0, [path(itf)])
    await policies()
    await att(False, 8, itf, 5)
    await pol(False, 8, 1, [path(itf, "10.100.0.3")])
    await policies()
    await attachments()
    # a tunnel deleted under a policy: its path stays; paths naming it are refused
    # (changing the policy's paths now would crash VPP: not done here)
    await pol(True, 11, 1, [path(itf, "10.100.0.9")])
    await att(True, 11, itf, 1)
    await call("ipip_del_tunnel", sw_if_index=itf)
    await policies()
    await pol(False, 11, 1, [path(itf, "10.100.0.9")])
    await pol(True, 12, 1, [path(itf, "10.100.0.9")])
    await att(False, 11, itf, 1)
    await attachments()
    return out


async def test_acl_abf_behave_like_real_vpp(real_vpp: Path, sim_socket: Path) -> None:
    real = await connect(real_vpp)
    sim = await connect(sim_socket)
    try:
        expected = await scenario(real)
        got = await scenario(sim)
    finally:
        await real.close()
        await sim.close()
    for i, (want, have) in enumerate(zip(expected, got, strict=True)):
        assert have == want, f"step {i}: real VPP {want}, vppsim {have}"


@pytest.fixture
def real_vpp_process(short_dir: Path) -> Iterator[RealVpp]:
    ns = f"pa-rc-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    vpp = RealVpp(ns, short_dir / "crash", plugins=("acl_plugin.so", "abf_plugin.so"))
    try:
        vpp.start()
        yield vpp
    finally:
        vpp.stop()
        subprocess.run(["ip", "netns", "del", ns], check=False)


async def _hazard_then_change(vpp: VppClient, hazard: str, retvals: list[int]) -> None:
    """The hazard, then the policy's next change; each policy change's retval is
    appended to `retvals` as it comes."""
    tun = await vpp.call("ipip_add_tunnel", tunnel={
        "instance": 1, "src": IPv4Address("192.0.2.10"), "dst": IPv4Address("203.0.113.1"),
        "table_id": 0, "flags": 0, "mode": 0, "dscp": 0})
    itf = int(tun.sw_if_index)
    rs = [rule()]
    await vpp.call("acl_add_replace", acl_index=NO_INDEX, tag="t", count=1, r=rs)

    async def pol(is_add: bool, paths: list[Any]) -> int:
        r = await vpp.call("abf_policy_add_del", _check=False, is_add=is_add, policy={
            "policy_id": 7, "acl_index": 0, "n_paths": len(paths), "paths": paths})
        return int(r.retval)

    retvals.append(await pol(True, [path(itf, "10.100.0.5")]))
    if hazard == "a path added twice":
        retvals.append(await pol(True, [path(itf, "10.100.0.5")]))
    else:
        await vpp.call("ipip_del_tunnel", sw_if_index=itf)
    retvals.append(await pol(True, [path(NO_INDEX, "0.0.0.0", 2)]))  # the next change


@pytest.mark.parametrize("hazard", ["a path added twice", "a path through a deleted tunnel"])
async def test_the_abf_changes_that_crash_real_vpp_are_refused_by_vppsim(
        real_vpp_process: RealVpp, sim_socket: Path, hazard: str) -> None:
    """The two changes the PolicyManager never makes: on real VPP 26.06 the policy's
    next change after them kills VPP (SIGSEGV); vppsim refuses that change instead, so
    a test that makes one fails rather than passing on a double that survives it."""
    before = [0, 0] if hazard == "a path added twice" else [0]  # the hazard is accepted
    real, retvals = await connect(real_vpp_process.socket_path), []
    try:
        with pytest.raises(VppError):
            await _hazard_then_change(real, hazard, retvals)
        await until(lambda: not real_vpp_process.running, timeout=10)
        assert retvals == before  # VPP died on the next change, not before it
    finally:
        await real.close()
    sim, retvals = await connect(sim_socket), []
    try:
        await _hazard_then_change(sim, hazard, retvals)
        assert retvals == [*before, -1]  # UNSPECIFIED: vppsim logs "real VPP would crash"
        assert (await sim.call("show_version")).retval == 0
    finally:
        await sim.close()
