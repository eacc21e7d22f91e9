"""The configuration hash chain (`router-cfg-hash`), byte for byte as flexiManage
computes it (pure). flexiagent's own `json.dumps` escapes non-ASCII text, so it
departs from flexiManage on such input; the agent follows the controller.

flexiManage advances its copy when it queues a job:
``sha1(previous + json-stable-stringify(task))``; the device advances its copy
the same way after it answered a signed-set job with ``ok: 1``, and resets it to
``''`` after a successful ``sync-device``. Equal values mean "in sync".
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from agent.jobs.messages import SIGNED, SYNC_DEVICE
from agent.jobs.wirejson import canonical

# SIGNED (from the registry): the messages whose ok:1 reply advances the chain.
__all__ = ["SIGNED", "SYNC_DEVICE", "advance", "is_signed", "task_of"]


def task_of(msg: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a received `msg` that flexiManage hashed: entity, message, params
    (only the keys that were present; seq, jobid and hostId are outside msg)."""
    return {k: msg[k] for k in ("entity", "message", "params") if k in msg}


def advance(previous: str, msg: Mapping[str, Any],
            known: Mapping[int, str] | None = None) -> str:
    """The chain value after applying `msg` (the received msg object, unmodified);
    `known`: canonical texts of some of its dicts already made (see `canonical`)."""
    text = previous + canonical(task_of(msg), known)
    return hashlib.sha1(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def is_signed(message: str) -> bool:
    return message in SIGNED
