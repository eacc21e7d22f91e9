"""`show bgp summary json` -> the controller's `bgp` shape (protocol reference 10.2 / 12.6).

Pure. flexiManage validates the object with Joi and rejects unknown keys, so
only the listed keys are copied, with FRR's values coerced to the listed types
(FRR omits some counters for peers that never came up: they become 0).
"""

from __future__ import annotations

import json
from typing import Any

_PEER_NUMBERS = ("remoteAs", "msgRcvd", "msgSent", "peerUptimeMsec", "pfxRcd", "pfxSnt")
_PEER_STRINGS = ("peerUptime", "state", "peerState")
_TOP_NUMBERS = ("failedPeers", "displayedPeers", "totalPeers")


def bgp_status(summary_json: str) -> dict[str, Any]:
    """The `ipv4Unicast` part in the controller's shape; `{}` when there is none."""
    try:
        doc = json.loads(summary_json)
    except ValueError:
        return {}
    v4 = doc.get("ipv4Unicast") if isinstance(doc, dict) else None
    if not isinstance(v4, dict) or "as" not in v4:
        return {}
    raw_peers = v4.get("peers")
    peers: dict[str, Any] = raw_peers if isinstance(raw_peers, dict) else {}
    return {
        "routerId": str(v4.get("routerId", "")),
        "as": _number(v4.get("as")),
        **{k: _number(v4.get(k)) for k in _TOP_NUMBERS},
        "peers": {
            str(ip): {
                **{k: _number(p.get(k)) for k in _PEER_NUMBERS},
                **{k: str(p.get(k, "")) for k in _PEER_STRINGS},
            }
            for ip, p in peers.items() if isinstance(p, dict)
        },
    }


def _number(value: object) -> int | float:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float):
        return value
    try:
        return int(str(value))
    except ValueError:
        return 0
