"""vppsim's strongSwan IKE backend: the agent's IKEv2 profiles negotiated for real.

`StrongswanIke` owns one charon in the namespace vppsim runs in (private
strongswan.conf, VICI socket, pid file and logs: several labs can run at once)
and drives it over VICI:

* a profile becomes a connection with the same proposal, IDs, PSK, selectors,
  child lifetime, addresses and UDP encapsulation; it is loaded when the agent
  initiates and unloaded when the profile goes;
* `ikev2_initiate_sa_init` -> VICI `initiate` in a worker thread (the API reply
  does not wait); the log lines charon streams back name a failure, which is
  mapped to VPP's SA states (AUTH_FAILED, NO_PROPOSAL_CHOSEN, TS_UNACCEPTABLE);
* `list-sas`, polled, is the truth for the SA dumps: real SPIs, states and
  transforms; an SA charon no longer has (peer deleted it, DPD) leaves vppsim too;
* delete/rekey by SPI -> VICI `terminate` / `rekey`.

Data plane. ESP runs in charon's user space (kernel-libipsec; this kernel has no
ESP), which reads and writes cleartext packets on its TUN device `ipsec0`. The
backend plays VPP's part between that engine and Linux: for every linux-cp pair
it creates the host TUN (`peer7`) with the tunnel's addresses and mirrors the
routes the agent programs through the tunnel, then shuttles packets: what Linux
sends into `peer7` goes out through `ipsec0` (charon encrypts it), what charon
decrypts arrives on `ipsec0` and is handed to the `peer<N>` TUN whose address it
is for. The kernel never routes through `ipsec0`: charon's own routes for the
remote selectors go to a private table that no rule consults (with 0.0.0.0/0
selectors they would otherwise capture charon's own IKE/ESP packets and loop),
and packets arriving on `ipsec0` are dropped by nftables after vppsim's packet
socket took its copy. So only the routes the agent programs steer traffic into
the tunnel, and the IKE endpoints stay reachable outside it.

Modules: `charon` (the charon process, its strongswan.conf and plugins),
`translate` (profile -> VICI connection, charon's lines -> SA states; pure),
`dataplane` (the TUNs between linux-cp and ipsec0) and `backend` (StrongswanIke,
which drives them). This module is the package's public face.
"""

from __future__ import annotations

from agent.lab.vppsim.ike_strongswan.backend import StrongswanIke
from agent.lab.vppsim.ike_strongswan.charon import (
    CHARON,
    PLUGIN_DIR,
    PLUGIN_PACKAGES,
    PLUGINS,
    Charon,
    CharonError,
    charon_available,
    load_list,
    missing_plugin,
    plugin_path,
    strongswan_conf,
    vici_session,
)
from agent.lab.vppsim.ike_strongswan.dataplane import DataPlane, open_tun
from agent.lab.vppsim.ike_strongswan.translate import (
    FAILURES,
    classify_failure,
    connection_for,
    initiated_uid,
)

__all__ = [
    "CHARON", "FAILURES", "PLUGINS", "PLUGIN_DIR", "PLUGIN_PACKAGES", "Charon",
    "CharonError", "DataPlane", "StrongswanIke", "charon_available", "classify_failure",
    "connection_for", "initiated_uid", "load_list", "missing_plugin", "open_tun",
    "plugin_path", "strongswan_conf", "vici_session",
]
