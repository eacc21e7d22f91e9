"""The manager's change types: a modify keeps what the controller left out."""

from __future__ import annotations

from ipaddress import IPv4Address

from agent.peers.changes import ModifyTargets
from tests.spec_factory import example_spec


def test_a_list_left_out_keeps_the_stored_one() -> None:
    spec = example_spec(monitor_ips=(IPv4Address("1.1.1.1"),), monitor_urls=("a.example",))
    ips_only = ModifyTargets(7, monitor_ips=(IPv4Address("9.9.9.9"),))
    assert ips_only.applied_to(spec).monitor_ips == (IPv4Address("9.9.9.9"),)
    assert ips_only.applied_to(spec).monitor_urls == ("a.example",)
    emptied = ModifyTargets(7, monitor_urls=())
    assert emptied.applied_to(spec).monitor_urls == ()
    assert emptied.applied_to(spec).monitor_ips == (IPv4Address("1.1.1.1"),)
    assert not ips_only.empty and not emptied.empty
    assert ModifyTargets(7).empty and ModifyTargets(7).applied_to(spec) == spec
