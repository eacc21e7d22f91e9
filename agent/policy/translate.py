"""Rules + choices -> the desired VPP objects of each rule. Pure code.

Each rule owns three kinds of VPP object (section 13.4 of the protocol notes), each
with a module of its own under `agent/policy/kinds/`: its ACL (`acl.py`), the ABF
policy on that ACL whose paths are the rule's current choice (`abf_policy.py`) and
the policy's attachments (`abf_attach.py`). This module builds the desired model the
kinds compare with what VPP shows; `agent.policy.kinds` reads, diffs and removes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from agent.policy.decide import Choice
from agent.policy.kinds.abf_policy import choice_paths
from agent.policy.kinds.acl import acl_entries
from agent.policy.kinds.base import DesiredRule
from agent.policy.model import Rule


def desired_rules(rules: Sequence[Rule], choices: Mapping[str, Choice],
                  lan: Iterable[int], wan: Iterable[int]) -> list[DesiredRule]:
    lan_set, wan_set = frozenset(lan), frozenset(wan)
    out = []
    for r in rules:
        attach = lan_set | wan_set if r.apply_on_wan_rx else lan_set
        out.append(DesiredRule(r.id, acl_entries(r.matches), choice_paths(choices[r.id]),
                               attach, r.priority))
    return out

