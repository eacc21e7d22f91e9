"""Strict validation of controller jobs into the peer manager's changes (`PeerSpec`s).

flexiManage validates little (see the protocol reference), so this module is the
last line of defence: every value is checked, and every rejection names the
controller's field path, the offending value and what is allowed, because the
administrator reads the message in the controller's UI. All problems of a job
are collected and reported together, one `field: value: reason; allowed: ...`
per problem, joined by " | ".

The PSK never appears in a message: it is wrapped in `Secret` while parsing, its
problems are described by length only, pydantic `input` values are never shown
for it or for any misplaced object or list, and as a last guard an offending value
that contains the raw PSK (pasted into another field) is shown masked.
`JobRejected` is raised outside of any `except` block so no exception chain can
carry pydantic's error (which holds the input) into a traceback.

Decisions (documented here because the controller's UI cannot express them):
- IKE with an AEAD cipher (AES-GCM-16, ChaCha20-Poly1305) has no integrity
  transform. flexiManage's UI still offers an IKE "integrity" with GCM; as in
  Cisco/Fortinet UIs, an HMAC chosen there selects the PRF (sha2-384 -> PRF
  sha2-384) and the integrity transform is 0. With `none`, the PRF is
  HMAC-SHA2-256 (5): VPP's own default for PRF 0, and what AWS, GCP and
  Cloudflare propose with GCM. GMAC is ESP-only and is rejected for IKE.
- ESP with an AEAD cipher must say integ `none`; ESP NULL needs AES-GMAC.
- Fixed-size ciphers (3des 192, des 64, null 0) ignore the wire `key-size`:
  flexiManage always sends 128 or 256 there.
- `pfs: true` with an empty ESP dh-group means PFS with the IKE group; a group
  given with `pfs: false` is contradictory and rejected.
- The PSK must be 8-1024 printable ASCII characters without whitespace: non-ASCII
  keys are a classic interop failure (the peer encodes them differently).
- Monitoring targets are de-duplicated (order kept); URLs are lower-cased.
- `srcPort` (the org's VXLAN port) is range-checked but unused by ipip peer tunnels.

The checks live in this package's modules: `problems` (collecting, rendering and
masking problems, the rejection), `policy` (the local policy and fixed limits),
`shape` (pydantic's errors), `values` (addresses, names, identities, selectors),
`crypto` (transforms and the PSK) and `tunnel` (the messages). This module is the
package's public face.
"""

from __future__ import annotations

from agent.jobs.validation.policy import (
    MSS_MIN,
    MTU_MAX,
    MTU_MIN,
    PSK_MAX,
    PSK_MIN,
    PSK_RECOMMENDED_MIN,
    TUNNEL_ID_MAX,
    TUNNEL_ID_MIN,
    ValidationPolicy,
)
from agent.jobs.validation.problems import (
    JobNotSupported,
    JobRejected,
    Problem,
    pasted_psk_problems,
    rejection,
    render,
)
from agent.jobs.validation.routes import peer_static_routes
from agent.jobs.validation.tunnel import (
    Shared,
    normalize_add_tunnel,
    normalize_modify_tunnel,
    normalize_remove_tunnel,
    notification_problems,
)
from agent.jobs.validation.values import VPP_ID_MAX, dns_name_problem

__all__ = [
    "MSS_MIN", "MTU_MAX", "MTU_MIN", "PSK_MAX", "PSK_MIN", "PSK_RECOMMENDED_MIN",
    "TUNNEL_ID_MAX", "TUNNEL_ID_MIN", "VPP_ID_MAX", "JobNotSupported", "JobRejected",
    "Problem", "Shared", "ValidationPolicy", "dns_name_problem", "normalize_add_tunnel",
    "normalize_modify_tunnel", "normalize_remove_tunnel", "notification_problems",
    "pasted_psk_problems", "peer_static_routes", "rejection", "render",
]
