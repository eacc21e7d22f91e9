"""The third-party peer: a strongSwan gateway configured by its own administrator.

Its swanctl.conf is written here by hand, from the peer's side, the way the
remote administrator would mirror what the device's operator told them; it is
never derived from the agent's or vppsim's state.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from agent.lab.topology import Lab, sh
from agent.lab.vppsim.ike_strongswan import PLUGINS, Charon

PEER_STRONGSWAN_CONF = """\
charon {{
  load = {plugins}
  # ESP in user space (no kernel ESP here). Its routes for 0.0.0.0/0 would also
  # capture our own IKE packets: put them in a table no packet is looked up in and
  # route the device's tunnel network into ipsec0 ourselves.
  install_routes = no
  routing_table = 4343
  routing_table_prio = 4343
  retransmit_timeout = 0.5
  retransmit_base = 1.4
  retransmit_tries = 2
  # VPP 26.06 implements no IKEv2 cookies (RFC 7296 2.6): an IKE_SA_INIT answered with
  # COOKIE is retransmitted unchanged forever. Many tunnels of one device behind one NAT
  # address are legitimate half-open SAs after an outage (strongSwan 5.9 asks for cookies
  # from 3 per address), so this gateway does not demand cookies for them.
  cookie_threshold_ip = 1000
  block_threshold = 1000
  plugins {{
    vici {{ socket = unix://{vici} }}
    kernel-netlink {{ fwmark = 0x10f7 }}
  }}
  syslog {{ identifier = charon-peer }}
  filelog {{ peer {{ path = {log}
    time_format = %T
    default = 1
    flush_line = yes }} }}
}}
"""


@dataclass
class PeerSettings:
    """What the remote administrator typed in."""

    psk: str = "S3cr3tPSK-lab-peer"
    local_id: str = "gw.cloud.example"
    remote_id: str = "198.51.100.7"
    ike_proposal: str = "aes256-sha256-modp2048"
    esp_proposal: str = "aes256-sha256"
    local_ts: str = "0.0.0.0/0"
    remote_ts: str = "0.0.0.0/0"
    tunnel_net: str = "10.100.0.16/31"  # the /31 inside the tunnel, routed into ipsec0

    address: str = ""  # where this gateway listens; "" = the lab's peer address

    def swanctl_conf(self, lab: Lab) -> str:
        return f"""\
connections {{
  edge-device {{
    version = 2
    local_addrs = {self.address or lab.peer_addr}
    remote_addrs = %any
    proposals = {self.ike_proposal}
    dpd_delay = 10s
    local {{
      auth = psk
      id = {self.local_id}
    }}
    remote {{
      auth = psk
      id = {self.remote_id}
    }}
    children {{
      edge-net {{
        local_ts = {self.local_ts}
        remote_ts = {self.remote_ts}
        esp_proposals = {self.esp_proposal}
        dpd_action = clear
      }}
    }}
  }}
}}
secrets {{
  ike-edge {{
    id-gw = {self.local_id}
    id-edge = {self.remote_id}
    secret = "{self.psk}"
  }}
}}
"""


class PeerGateway:
    """The peer's charon in the lab's peer namespace (or in `netns`: a second peer)."""

    def __init__(self, lab: Lab, workdir: Path, settings: PeerSettings,
                 netns: str = "", name: str = "peer") -> None:
        self.lab = lab
        self.settings = settings
        self.netns = netns or lab.peer
        self.dir = workdir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        vici = self.dir / "charon.vici"
        self.charon = Charon(
            self.dir, self.netns, label=f"{name} charon",
            conf=PEER_STRONGSWAN_CONF.format(vici=vici, log=self.dir / "charon.log",
                                             plugins=PLUGINS))
        self.swanctl_path = self.dir / "swanctl.conf"

    def start(self) -> None:
        self.swanctl_path.write_text(self.settings.swanctl_conf(self.lab))
        self.charon.start()
        done = subprocess.run(
            ["swanctl", "--load-all", "--noprompt", "--file", str(self.swanctl_path),
             "--uri", f"unix://{self.charon.vici_path}"],
            capture_output=True, text=True, timeout=20)
        if done.returncode != 0:
            raise RuntimeError(f"swanctl --load-all failed: {done.stdout}{done.stderr}")
        sh(self.netns, "ip", "route", "replace", self.settings.tunnel_net, "dev", "ipsec0")

    def restart(self) -> None:
        """A crash and restart: no DELETE sent, all SAs forgotten."""
        self.charon.kill()
        self.start()

    def stop(self) -> None:
        self.charon.stop()

    def list_sas(self) -> str:
        done = subprocess.run(["swanctl", "--list-sas", "--uri",
                               f"unix://{self.charon.vici_path}"],
                              capture_output=True, text=True, timeout=10)
        return done.stdout
