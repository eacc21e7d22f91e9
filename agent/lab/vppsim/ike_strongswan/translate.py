"""Pure translation between vppsim and charon: a VPP IKEv2 profile -> the VICI
connection that realizes it; charon's log lines -> VPP's SA states."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from agent.lab.vppsim.state import (
    AUTH_FAILED,
    NO_PROPOSAL_CHOSEN,
    TS_UNACCEPTABLE,
    Profile,
)
from agent.peers import strongswan

# charon's log lines that name why a negotiation failed, most specific first
FAILURES: tuple[tuple[str, int], ...] = (
    ("NO_PROPOSAL_CHOSEN", NO_PROPOSAL_CHOSEN),
    ("no acceptable proposal", NO_PROPOSAL_CHOSEN),
    ("TS_UNACCEPTABLE", TS_UNACCEPTABLE),
    ("no acceptable traffic selectors", TS_UNACCEPTABLE),
    ("AUTHENTICATION_FAILED", AUTH_FAILED),
    ("authentication of", AUTH_FAILED),  # "... failed" when the peer's AUTH is wrong
    ("no shared key found", AUTH_FAILED),
    ("constraint check failed", AUTH_FAILED),  # the peer's ID is not the one configured
    ("no matching peer config", AUTH_FAILED),
)


def classify_failure(lines: list[str]) -> int | None:
    """VPP's SA state for a failed negotiation, from charon's log lines (None: unknown)."""
    for needle, state in FAILURES:
        for line in lines:
            if needle in line and (needle != "authentication of" or "failed" in line):
                return state
    return None


def _proposal(t: dict[str, int], *, ike: bool) -> str:
    """The profile's transforms as VPP holds them, every one spelt out (the PRF too)."""
    encr = t.get("crypto_alg", 0)
    parts = [strongswan.encr_keyword(encr, t.get("crypto_key_size", 0) or 256)]
    integ = t.get("integ_alg", 0)
    if integ and encr not in strongswan.AEAD_ENCR:
        parts.append(strongswan.integ_keyword(integ))
    if ike:
        parts.append(strongswan.prf_keyword(t.get("prf_alg") or 5))  # VPP's default PRF
        parts.append(strongswan.dh_keyword(t.get("dh_group", 0)))
    elif t.get("dh_group"):
        parts.append(strongswan.dh_keyword(t["dh_group"]))
    return "-".join(parts)


def _identity(ident: tuple[int, bytes]) -> str:
    kind, data = ident
    if kind == 1:
        text = str(ipaddress.IPv4Address(data))
    elif kind == strongswan.IP6_ADDR:
        text = str(ipaddress.IPv6Address(data))
    else:
        text = data.decode("ascii", "replace")
    return strongswan.identity(kind, text)


def _ts(ts: dict[str, Any] | None) -> list[str]:
    if ts is None:
        return ["dynamic"]
    nets = ipaddress.summarize_address_range(ts["start_addr"], ts["end_addr"])
    proto = ts["protocol_id"]
    ports = ""
    if (ts["start_port"], ts["end_port"]) != (0, 65535):
        ports = (str(ts["start_port"]) if ts["start_port"] == ts["end_port"]
                 else f"{ts['start_port']}-{ts['end_port']}")
    suffix = f"[{proto or '%any'}/{ports}]" if proto or ports else ""
    return [f"{n}{suffix}" for n in nets]


def connection_for(p: Profile, local_addr: str, dpd_delay: float = 10.0) -> dict[str, Any]:
    """The VICI `load-conn` body that realizes VPP profile `p` (one IKE/ESP proposal).

    dpd_delay plays VPP's global liveness period (`ikev2_profile_set_liveness`).
    """
    assert p.ike is not None and p.esp is not None and p.responder_addr is not None
    # VPP 26.06's meaning: the child SA is rekeyed at lifetime + random(0..jitter) s;
    # handover is the interval between rekey retries, so the SA may live a few retries
    # beyond that before it is gone
    lifetime = p.lifetime or 3600
    handover = p.handover or max(lifetime // 20, 1)
    child: dict[str, Any] = {
        "mode": "tunnel",
        "local_ts": _ts(p.loc_ts),
        "remote_ts": _ts(p.rem_ts),
        "esp_proposals": [_proposal(p.esp, ike=False)],
        "life_time": str(lifetime + p.lifetime_jitter + 3 * handover),
        "rekey_time": str(lifetime),
        "rand_time": str(p.lifetime_jitter),
        "start_action": "none",
        # VPP 26.06 re-initiates the IKE SA by itself when DPD finds the peer gone
        "dpd_action": "restart",
        "close_action": "none",
    }
    return {
        "version": "2",
        "local_addrs": [local_addr],
        "remote_addrs": [str(p.responder_addr)],
        "proposals": [_proposal(p.ike, ike=True)],
        "encap": "yes" if p.udp_encap else "no",
        "mobike": "no",
        "keyingtries": "1",
        "unique": "replace",
        "dpd_delay": f"{max(1, round(dpd_delay))}s",
        "local": {"auth": "psk", "id": _identity(p.loc_id)},
        "remote": {"auth": "psk", "id": _identity(p.rem_id)},
        "children": {p.name: child},
    }


def initiated_uid(conn: str, lines: list[str]) -> str | None:
    """The unique id of the IKE SA an initiate created or reused, from its log lines."""
    for line in lines:
        m = re.search(rf"IKE_SA {re.escape(conn)}\[(\d+)\]", line)
        if m:
            return m.group(1)
    return None
