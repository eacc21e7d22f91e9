"""Rules + choices -> the ACL, ABF policy and attachment kinds' writes with undo;
observed-vs-desired diff."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from types import SimpleNamespace as NS
from typing import Any

from agent.policy import kinds
from agent.policy.decide import Choice, Kind, Link
from agent.policy.kinds import diff, remove_all
from agent.policy.kinds.abf_policy import DROP_PATH, POLICY_ID_BASE, PathSpec
from agent.policy.kinds.acl import ANY_NET, AclEntry, acl_entries
from agent.policy.kinds.base import NO_INDEX, DesiredRule, Observed, PolicyKind, Reading
from agent.policy.model import Match, Protocol, parse_policy
from agent.policy.translate import desired_rules
from agent.vpp.plan import Op, Ref


def observe(*dumps: Any, live: frozenset[PathSpec] | None = None) -> Observed:
    """The three dumps, in kind order, read back."""
    return kinds.observe(dumps, live)


NET = IPv4Network("10.9.0.0/16")
A = Link("peer 1", "A", 11, IPv4Address("10.100.0.1"), 1)
B = Link("peer 3", "B", 13, IPv4Address("10.100.0.5"), 3)
PA = PathSpec(0, 11, IPv4Address("10.100.0.1"))
PB = PathSpec(0, 13, IPv4Address("10.100.0.5"))


def test_flexiagent_pairs_of_permit_entries() -> None:
    assert acl_entries([Match(NET)]) == (
        AclEntry(ANY_NET, NET, 0), AclEntry(NET, ANY_NET, 0))
    tcp_udp = acl_entries([Match(NET, (443, 443))])
    assert [(e.proto, e.src, e.dport, e.sport) for e in tcp_udp] == [
        (6, ANY_NET, (443, 443), (0, 65535)), (6, NET, (0, 65535), (443, 443)),
        (17, ANY_NET, (443, 443), (0, 65535)), (17, NET, (0, 65535), (443, 443))]
    only_udp = acl_entries([Match(None, (5060, 5061), Protocol.UDP)])
    assert {e.proto for e in only_udp} == {17} and len(only_udp) == 2
    # the same match twice is one pair
    assert len(acl_entries([Match(NET), Match(NET)])) == 2


def rules(apply_on_wan: bool = False, prio: int = 10) -> Any:
    raw = {"id": "r1", "priority": prio, "apply-on-wan-rx": apply_on_wan,
           "classification": {"prefix": {"ip": str(NET)}},
           "action": {"links": [{"pathlabels": ["A"]}, {"pathlabels": ["B"]}],
                      "fallback": "drop"}}
    return parse_policy({"id": "p", "rules": [raw]}).rules


def test_desired_paths_follow_the_choice_and_attachments_the_wan_flag() -> None:
    (d,) = desired_rules(rules(), {"r1": Choice(Kind.PATHS, (A,), 1)}, [5, 6], [1])
    assert d.paths == {PA} and d.attach == {5, 6} and d.priority == 10
    (d,) = desired_rules(rules(True), {"r1": Choice(Kind.DROP)}, [5], [1])
    assert d.paths == {DROP_PATH} and d.attach == {5, 1}
    (d,) = desired_rules(rules(), {"r1": Choice(Kind.FIB)}, [5], [1])
    assert d.paths == frozenset()


def test_fresh_install_creates_acl_policy_and_attachments_each_with_undo() -> None:
    (d,) = desired_rules(rules(), {"r1": Choice(Kind.PATHS, (A,), 1)}, [5, 6], [])
    ops = diff(Observed(), [d])
    assert [o.message for o in ops] == [
        "acl_add_replace", "abf_policy_add_del", "abf_itf_attach_add_del",
        "abf_itf_attach_add_del"]
    acl, pol, att, _ = ops
    assert acl.args["acl_index"] == NO_INDEX and acl.args["tag"] == "mlp:r1"
    assert acl.produces == "acl:r1" and acl.produces_field == "acl_index"
    assert acl.undo[0].message == "acl_del" and acl.undo[0].args["acl_index"] == Ref("acl:r1")
    assert pol.args["is_add"] and pol.args["policy"]["policy_id"] == POLICY_ID_BASE
    assert pol.args["policy"]["acl_index"] == Ref("acl:r1")
    assert pol.undo[0].args["is_add"] is False
    assert att.args["attach"] == {"policy_id": POLICY_ID_BASE, "sw_if_index": 5,
                                  "priority": 10, "is_ipv6": False}
    assert att.undo[0].args["is_add"] is False


def as_dump(obs_rules: list[DesiredRule], acl_base: int = 3,
            foreign: bool = True) -> tuple[list[Any], list[Any], list[Any]]:
    """Dump records as VPP would return them once `obs_rules` are installed."""
    acls: list[Any] = []
    pols: list[Any] = []
    atts: list[Any] = []
    if foreign:  # someone else's ACL and ABF policy: never touched
        acls.append(NS(acl_index=0, tag="operator", count=0, r=[]))
        pols.append(NS(policy=NS(policy_id=POLICY_ID_BASE, acl_index=0, n_paths=1,
                                 paths=[_path(DROP_PATH)])))
    for i, d in enumerate(obs_rules):
        idx = acl_base + i
        acls.append(NS(acl_index=idx, tag=f"mlp:{d.rule_id}", count=len(d.acl),
                       r=[_rule(e) for e in d.acl]))
        if d.paths:
            pid = POLICY_ID_BASE + 1 + i
            pols.append(NS(policy=NS(policy_id=pid, acl_index=idx, n_paths=len(d.paths),
                                     paths=[_path(p) for p in sorted(d.paths)])))
            atts += [NS(attach=NS(policy_id=pid, sw_if_index=s, priority=d.priority,
                                  is_ipv6=False)) for s in d.attach]
    return acls, pols, atts


def _rule(e: AclEntry) -> Any:
    return NS(is_permit=e.is_permit, src_prefix=e.src, dst_prefix=e.dst, proto=e.proto,
              srcport_or_icmptype_first=e.sport[0], srcport_or_icmptype_last=e.sport[1],
              dstport_or_icmpcode_first=e.dport[0], dstport_or_icmpcode_last=e.dport[1])


def _path(p: PathSpec) -> Any:
    return NS(type=p.type, sw_if_index=p.sw_if_index, nh=NS(address=NS(ip4=p.next_hop)))


def test_in_sync_means_zero_writes() -> None:
    (d,) = desired_rules(rules(), {"r1": Choice(Kind.PATHS, (A, B))}, [5, 6], [])
    obs = observe(*as_dump([d]))
    assert obs.rules["r1"].acl_index == 3 and obs.rules["r1"].attach == {5: 10, 6: 10}
    assert diff(obs, [d]) == []
    assert obs.refs() == {"acl:r1": 3}


def test_path_change_adds_the_new_path_before_removing_the_old() -> None:
    (before,) = desired_rules(rules(), {"r1": Choice(Kind.PATHS, (A,), 1)}, [5], [])
    (after,) = desired_rules(rules(), {"r1": Choice(Kind.PATHS, (B,), 2)}, [5], [])
    ops = diff(observe(*as_dump([before])), [after])
    assert [(o.message, o.args["is_add"]) for o in ops] == [
        ("abf_policy_add_del", True), ("abf_policy_add_del", False)]
    assert ops[0].args["policy"]["paths"][0]["sw_if_index"] == 13
    assert ops[1].args["policy"]["paths"][0]["sw_if_index"] == 11
    assert ops[0].args["policy"]["policy_id"] == POLICY_ID_BASE + 1  # the existing policy
    # to drop: add the drop path, remove A
    (drop,) = desired_rules(rules(), {"r1": Choice(Kind.DROP)}, [5], [])
    ops = diff(observe(*as_dump([before])), [drop])
    assert ops[0].args["policy"]["paths"][0]["type"] == 2


def test_fib_decides_means_no_policy_and_no_attachment() -> None:
    (before,) = desired_rules(rules(), {"r1": Choice(Kind.PATHS, (A,), 1)}, [5, 6], [])
    (fib,) = desired_rules(rules(), {"r1": Choice(Kind.FIB)}, [5, 6], [])
    ops = diff(observe(*as_dump([before])), [fib])
    assert [(o.message, o.args["is_add"]) for o in ops] == [
        ("abf_itf_attach_add_del", False), ("abf_itf_attach_add_del", False),
        ("abf_policy_add_del", False)]
    # and back: a new policy id (the foreign one and none of ours are taken)
    back = diff(observe(*as_dump([fib])), [before])
    assert back[0].args["policy"]["policy_id"] == POLICY_ID_BASE + 1


def test_priority_and_interface_changes() -> None:
    (d,) = desired_rules(rules(prio=10), {"r1": Choice(Kind.PATHS, (A,), 1)}, [5, 6], [])
    (d2,) = desired_rules(rules(prio=20), {"r1": Choice(Kind.PATHS, (A,), 1)}, [5, 7], [])
    ops = diff(observe(*as_dump([d])), [d2])
    assert [(o.args["is_add"], o.args["attach"]["sw_if_index"], o.args["attach"]["priority"])
            for o in ops] == [(False, 5, 10), (True, 5, 20), (True, 7, 20), (False, 6, 10)]


def test_acl_content_change_replaces_in_place() -> None:
    (d,) = desired_rules(rules(), {"r1": Choice(Kind.PATHS, (A,), 1)}, [5], [])
    obs = observe(*as_dump([d]))
    wider = DesiredRule("r1", acl_entries([Match(IPv4Network("10.0.0.0/8"))]), d.paths,
                        d.attach, d.priority)
    (op,) = diff(obs, [wider])
    assert op.message == "acl_add_replace" and op.args["acl_index"] == Ref("acl:r1")
    assert op.undo[0].args["r"][0]["dst_prefix"] == NET


def test_remove_all_tears_down_in_dependency_order_and_leaves_foreign_objects() -> None:
    (d,) = desired_rules(rules(), {"r1": Choice(Kind.PATHS, (A,), 1)}, [5], [])
    ops = remove_all(observe(*as_dump([d])))
    assert [o.message for o in ops] == [
        "abf_itf_attach_add_del", "abf_policy_add_del", "acl_del"]
    assert ops[2].args["acl_index"] == Ref("acl:r1")
    recreate = ops[2].undo[0]
    assert recreate.message == "acl_add_replace" and recreate.produces == "acl:r1"
    assert all(o.args.get("policy", {}).get("policy_id") != POLICY_ID_BASE for o in ops)


def test_duplicate_tags_are_cleaned_up() -> None:
    (d,) = desired_rules(rules(), {"r1": Choice(Kind.PATHS, (A,), 1)}, [5], [])
    acls, pols, atts = as_dump([d])
    acls.append(NS(acl_index=9, tag="mlp:r1", count=0, r=[]))
    obs = observe(acls, pols, atts)
    (op,) = diff(obs, [d])
    assert op.message == "acl_del" and op.args["acl_index"] == Ref("acl:r1#9")
    assert obs.refs()["acl:r1#9"] == 9


def test_a_policy_with_a_path_that_is_no_link_is_only_detached() -> None:
    (d,) = desired_rules(rules(), {"r1": Choice(Kind.PATHS, (A,), 1)}, [5], [])
    dumps = as_dump([d])
    live = frozenset({PB})  # peer 1's tunnel is gone: its path is no longer a link
    obs = observe(*dumps, live=live)
    assert obs.rules["r1"].policy_id is None and len(obs.abandoned) == 1
    (want,) = desired_rules(rules(), {"r1": Choice(Kind.PATHS, (B,), 2)}, [5], [])
    ops = diff(obs, [want])
    assert [(o.message, o.args["is_add"]) for o in ops] == [
        ("abf_policy_add_del", True), ("abf_itf_attach_add_del", True),
        ("abf_itf_attach_add_del", False)]
    new_id = ops[0].args["policy"]["policy_id"]
    assert new_id not in (POLICY_ID_BASE, POLICY_ID_BASE + 1)  # foreign and abandoned ids
    assert ops[2].args["attach"]["policy_id"] == POLICY_ID_BASE + 1
    # with every path live the same dumps are simply in sync
    assert diff(observe(*dumps, live=frozenset({PA})), [d]) == []


def test_a_second_policy_on_the_same_acl_is_removed() -> None:
    (d,) = desired_rules(rules(), {"r1": Choice(Kind.PATHS, (A,), 1)}, [5], [])
    acls, pols, atts = as_dump([d])
    pols.append(NS(policy=NS(policy_id=77, acl_index=3, n_paths=1, paths=[_path(PB)])))
    atts.append(NS(attach=NS(policy_id=77, sw_if_index=5, priority=1, is_ipv6=False)))
    ops = diff(observe(acls, pols, atts, live=frozenset({PA, PB})), [d])
    assert [(o.message, o.args["is_add"]) for o in ops] == [
        ("abf_itf_attach_add_del", False), ("abf_policy_add_del", False)]
    assert {o.args.get("policy", o.args.get("attach"))["policy_id"] for o in ops} == {77}


class TagKind(PolicyKind):
    """A kind added by one registration line: a label per rule after its attachments."""

    name = "tag"
    messages = ("tag_add_del", "tag_dump")

    def read_request(self) -> tuple[str, dict[str, Any]]:
        return "tag_dump", {}

    def absorb(self, details: Any, obs: Observed, reading: Reading) -> None:
        obs.indexes.update({f"tag:{d.rule}": int(d.index) for d in details})

    def plan(self, observed: Observed, desired: Any, leftovers: Any,
             planning: Any) -> tuple[list[Op], list[Op]]:
        put = [Op("tag_add_del", {"is_add": True, "rule": d.rule_id}, "tag")
               for d in desired if f"tag:{d.rule_id}" not in observed.indexes]
        take = [Op("tag_add_del", {"is_add": False, "rule": lo.rule.rule_id}, "untag")
                for lo in leftovers if lo.delete_acl]
        return put, take


def test_a_registered_kind_is_read_planned_and_removed_by_the_unchanged_loops() -> None:
    registry = (*kinds.KINDS, TagKind())
    assert kinds.messages(registry)[-2:] == ("tag_add_del", "tag_dump")
    assert [m for m, _ in kinds.read_requests(registry)] == [
        "acl_dump", "abf_policy_dump", "abf_itf_attach_dump", "tag_dump"]
    (d,) = desired_rules(rules(), {"r1": Choice(Kind.PATHS, (A,), 1)}, [5], [])
    fresh = kinds.diff(Observed(), [d], registry)
    assert [o.message for o in fresh] == [
        "acl_add_replace", "abf_policy_add_del", "abf_itf_attach_add_del", "tag_add_del"]
    obs = kinds.observe((*as_dump([d]), [NS(rule="r1", index=4)]), None, registry)
    assert kinds.diff(obs, [d], registry) == []
    # taken away dependents first: the new kind's removal before the ones it depends on
    assert [o.message for o in kinds.diff(obs, [], registry)] == [
        "tag_add_del", "abf_itf_attach_add_del", "abf_policy_add_del", "acl_del"]
