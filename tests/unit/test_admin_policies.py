"""`peerctl show policies` text from PolicyManager.status()."""

from __future__ import annotations

from agent.admin.policies import render_policies


def test_render_policies() -> None:
    status = {
        "policy_id": "pol1", "lan_interfaces": ["GigabitEthernet0/4/0"], "reprogrammings": 2,
        "reprogram_failures": 0, "last_error": "",
        "rules": [
            {"rule": "r1", "priority": 10, "classification": "prefix 172.16.0.0/16",
             "groups": [{"labels": ["A"], "order": "priority"},
                        {"labels": ["B"], "order": "link-quality"}],
             "group_order": "priority", "fallback": "drop", "apply_on_wan_rx": True,
             "chosen": "peer 2", "why": "group 1 [A]: peer 1 down; group 2 [B]: peer 2 best",
             "since": 1000.0},
            {"rule": "r2", "priority": 20, "classification": "app video",
             "groups": [{"labels": ["A", "B"], "order": "load-balancing"}],
             "group_order": "load-balancing", "fallback": "by-destination",
             "chosen": "not programmed", "why": "", "since": None},
        ],
    }
    assert render_policies(status, now=1125.0) == (
        "policy pol1: 2 rules; LAN GigabitEthernet0/4/0; re-programmed 2 times (0 failed)\n"
        "PRIO  RULE  CLASSIFICATION                GROUPS                           "
        "FALLBACK        NOW             SINCE  WHY\n"
        "10    r1    prefix 172.16.0.0/16 +wan-rx  A (priority) > B (link-quality)  "
        "drop            peer 2          2m05s  group 1 [A]: peer 1 down; group 2 [B]: "
        "peer 2 best\n"
        "20    r2    app video                     A,B (load-balancing)             "
        "by-destination  not programmed  -      -\n"
    )
    assert render_policies({"policy_id": None}, 0) == "no multilink policy installed\n"
    assert "last error: boom" in render_policies(status | {"last_error": "boom"}, 0)
