"""The policy model: controller params and the application database -> rules."""

from __future__ import annotations

import base64
import json
import zlib
from ipaddress import IPv4Network
from typing import Any

import pytest

from agent.policy.model import (
    Fallback,
    Match,
    Order,
    PolicyError,
    Protocol,
    expand_protocols,
    parse_applications,
    parse_policy,
)

APPS = [
    {"id": "app1", "name": "video", "category": "media", "serviceClass": "streaming",
     "importance": "high",
     "rules": [{"ip": "203.0.113.0/24", "ports": "443", "protocol": "tcp"},
               {"ip": "198.51.100.7/32"}]},
    {"id": "app2", "name": "voice", "category": "media", "serviceClass": "voip",
     "importance": "high", "rules": [{"ports": "5060-5061", "protocol": "udp"}]},
    {"id": "app3", "name": "mail", "category": "office", "serviceClass": "email",
     "importance": "low", "rules": [{"ip": "192.0.2.25/32", "ports": "25"}]},
]


def compressed(data: Any) -> str:
    return base64.b64encode(zlib.compress(json.dumps(data).encode())).decode()


def rule(rid: str = "r1", prio: int = 10, cls: dict[str, Any] | None = None,
         links: list[dict[str, Any]] | None = None, **action: Any) -> dict[str, Any]:
    return {
        "id": rid, "priority": prio,
        "classification": cls or {"prefix": {"ip": "10.1.0.0/16", "ports": "", "protocol": ""}},
        "action": {"links": links or [{"pathlabels": ["A"], "order": "priority"}],
                   "order": "priority", **action},
    }


def test_applications_decode_compressed_and_plain_alike() -> None:
    a = parse_applications({"applications": compressed(APPS)})
    b = parse_applications({"applications": APPS})
    c = parse_applications({"applications": json.dumps(APPS)})
    assert a == b == c
    assert a["app1"].matches == (
        Match(IPv4Network("203.0.113.0/24"), (443, 443), Protocol.TCP),
        Match(IPv4Network("198.51.100.7/32")),
    )
    assert a["app2"].matches[0].ports == (5060, 5061)


def test_applications_garbage_is_refused_with_the_reason() -> None:
    with pytest.raises(PolicyError, match="not base64 of zlib"):
        parse_applications({"applications": "not-base64!"})
    with pytest.raises(PolicyError, match="ports '70000'"):
        parse_applications({"applications": [{"id": "x", "rules": [{"ports": "70000"}]}]})


def test_prefix_rule_and_defaults() -> None:
    p = parse_policy({"id": "p", "rules": [rule()]})
    (r,) = p.rules
    assert r.matches == (Match(IPv4Network("10.1.0.0/16")),)
    assert r.classification == "prefix 10.1.0.0/16"
    assert r.group_order is Order.PRIORITY
    # flexiagent's default for a missing fallback is by-destination
    assert r.fallback is Fallback.BY_DESTINATION
    assert r.override_default_route and not r.apply_on_wan_rx


def test_rules_are_ordered_by_priority_and_ids_unique() -> None:
    p = parse_policy({"id": "p", "rules": [rule("b", 20), rule("a", 5), rule("c", 20)]})
    assert [r.id for r in p.rules] == ["a", "b", "c"]
    with pytest.raises(PolicyError, match="appears twice"):
        parse_policy({"id": "p", "rules": [rule("a"), rule("a")]})


def test_application_rule_by_id_and_by_attributes() -> None:
    apps = parse_applications({"applications": APPS})
    by_id = parse_policy({"id": "p", "rules": [
        rule(cls={"application": {"appId": "app1"}, "prefix": {}})]}, apps)
    assert by_id.rules[0].matches == apps["app1"].matches
    assert by_id.rules[0].classification == "app video"
    by_cat = parse_policy({"id": "p", "rules": [
        rule(cls={"application": {"appId": "", "category": "media", "importance": "high"}})]},
        apps)
    assert by_cat.rules[0].matches == apps["app1"].matches + apps["app2"].matches
    # as in flexiagent, an unknown application makes the rule match nothing
    (unknown,) = parse_policy({"id": "p", "rules": [
        rule(cls={"application": {"appId": "nope"}})]}, apps).rules
    assert unknown.matches == () and "matches nothing" in unknown.classification
    (none,) = parse_policy({"id": "p", "rules": [
        rule(cls={"application": {"category": "games"}})]}, apps).rules
    assert none.matches == () and "category=games" in none.classification
    with pytest.raises(PolicyError, match="names no appId"):
        parse_policy({"id": "p", "rules": [rule(cls={"application": {"appId": ""}})]}, apps)


@pytest.mark.parametrize(("bad", "why"), [
    ({"priority": 1001}, "priority 1001 must be an integer 0..1000"),
    ({"classification": {"prefix": {}, "application": {}}}, "classification needs"),
    ({"action": {"links": []}}, "action.links is empty"),
    ({"action": {"links": [{"pathlabels": ["A"], "order": "random"}]}}, "'random' is not one"),
    ({"action": {"links": [{"pathlabels": ["A"]}], "fallback": "maybe"}}, "fallback"),
    ({"action": {"links": [{"pathlabels": ["A"]}], "order": "link-quality"}},
     "action.order must be"),
    ({"classification": {"prefix": {"ip": "10.0.0.300/8"}}}, "not an IPv4 prefix"),
    ({"classification": {"prefix": {"ip": "10.0.0.0/8", "protocol": "icmp"}}}, "protocol"),
])
def test_invalid_rules_name_the_rule_and_the_value(bad: dict[str, Any], why: str) -> None:
    with pytest.raises(PolicyError, match=why) as e:
        parse_policy({"id": "p", "rules": [rule("r9") | bad]})
    assert "rule r9" in str(e.value)


def test_ports_without_protocol_mean_tcp_and_udp() -> None:
    assert expand_protocols(Match(None, (443, 443))) == (Protocol.TCP, Protocol.UDP)
    assert expand_protocols(Match(None, None)) == (Protocol.ANY,)
    assert expand_protocols(Match(None, (1, 2), Protocol.UDP)) == (Protocol.UDP,)
    assert parse_policy({"id": "p", "rules": [rule()]}).labels == frozenset({"A"})


def test_a_rule_id_must_fit_the_acl_tag() -> None:
    assert parse_policy({"id": "p", "rules": [rule("x" * 59)]}).rules[0].id == "x" * 59
    with pytest.raises(PolicyError, match="longer than 59 bytes"):
        parse_policy({"id": "p", "rules": [rule("x" * 60)]})
