"""What the routing and policy rooms read from the recorded items (pure)."""

from __future__ import annotations

from typing import Any

from agent.jobs.rooms import routing_model, wan_dia_labels


def interface(dev_id: str, kind: str, **extra: Any) -> tuple[str, tuple[str, Any]]:
    return (f"interface:{dev_id}", ("add-interface", {"dev_id": dev_id, "type": kind, **extra}))


def test_dia_labels_are_those_of_the_recorded_wan_interfaces() -> None:
    items = dict([
        interface("pci:0000:00:03.00", "WAN", multilink={"labels": ["dia-1", "dia-2"]}),
        interface("pci:0000:00:04.00", "LAN", multilink={"labels": ["not-a-wan"]}),
        interface("pci:0000:00:05.00", "wan", multilink={"labels": []}),
        interface("pci:0000:00:06.00", "WAN"),
    ])
    assert wan_dia_labels(items) == frozenset({"dia-1", "dia-2"})
    assert wan_dia_labels({}) == frozenset()


def test_interfaces_with_ospf_routing_reach_the_routing_model() -> None:
    items = dict([interface("pci:0000:00:04.00", "LAN", addr="192.168.10.1/24",
                            routing=["OSPF"], ospf={"area": "0.0.0.0"})])
    model = routing_model(items, "running")
    assert [str(n.network) for n in model.ospf_networks] == ["192.168.10.0/24"]
    assert routing_model(items, "stopped").ospf_networks == ()
