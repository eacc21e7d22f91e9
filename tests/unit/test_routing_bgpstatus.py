"""`show bgp summary json` (FRR 8.4) -> the controller's `bgp` object (reference 10.2 / 12.6)."""

from __future__ import annotations

import json

from agent.lab.flexi_rules import validate_bgp
from agent.routing.bgpstatus import bgp_status

# captured from FRR 8.4.4 (tests/integration/test_routing_frr.py topology), Established peer
ESTABLISHED = """{
"ipv4Unicast":{
  "routerId":"192.0.2.1", "as":65001, "vrfId":0, "vrfName":"default", "tableVersion":3,
  "ribCount":5, "ribMemory":960, "peerCount":1, "peerMemory":741464,
  "peers":{
    "10.100.0.17":{
      "hostname":"vm", "remoteAs":65010, "localAs":65001, "version":4, "msgRcvd":11,
      "msgSent":12, "tableVersion":0, "outq":0, "inq":0, "peerUptime":"00:00:08",
      "peerUptimeMsec":8000, "peerUptimeEstablishedEpoch":1795945710, "pfxRcd":1, "pfxSnt":3,
      "state":"Established", "peerState":"OK", "connectionsEstablished":1,
      "connectionsDropped":0, "idType":"ipv4"
    },
    "10.100.0.19":{
      "remoteAs":65011, "msgRcvd":0, "msgSent":0, "peerUptime":"never",
      "peerUptimeMsec":0, "state":"Active", "peerState":"OK", "idType":"ipv4"
    }
  },
  "failedPeers":1, "displayedPeers":2, "totalPeers":2, "dynamicPeers":0,
  "bestPath":{"multiPathRelax":"true"}
}
}"""

TOP_KEYS = {"routerId", "as", "failedPeers", "displayedPeers", "totalPeers", "peers"}
PEER_KEYS = {"remoteAs", "msgRcvd", "msgSent", "peerUptime", "peerUptimeMsec", "pfxRcd",
             "pfxSnt", "state", "peerState"}


def test_only_the_controllers_keys_are_kept_with_their_types() -> None:
    status = bgp_status(ESTABLISHED)
    assert set(status) == TOP_KEYS
    assert status["routerId"] == "192.0.2.1" and status["as"] == 65001
    assert (status["failedPeers"], status["displayedPeers"], status["totalPeers"]) == (1, 2, 2)
    up = status["peers"]["10.100.0.17"]
    assert set(up) == PEER_KEYS
    assert up == {"remoteAs": 65010, "msgRcvd": 11, "msgSent": 12, "peerUptime": "00:00:08",
                  "peerUptimeMsec": 8000, "pfxRcd": 1, "pfxSnt": 3, "state": "Established",
                  "peerState": "OK"}
    json.dumps(status)  # plain JSON for the reply


def test_counters_frr_omits_for_a_peer_that_never_came_up_are_zero() -> None:
    down = bgp_status(ESTABLISHED)["peers"]["10.100.0.19"]
    assert set(down) == PEER_KEYS
    assert down["pfxRcd"] == 0 and down["pfxSnt"] == 0 and down["state"] == "Active"


def test_no_bgp_is_an_empty_object() -> None:
    assert bgp_status("{}") == {}
    assert bgp_status("") == {}
    assert bgp_status('{"ipv6Unicast": {"as": 65001}}') == {}
    assert bgp_status("% BGP instance not found") == {}


def test_the_controllers_rule_accepts_the_status_and_rejects_what_joi_would() -> None:
    status = bgp_status(ESTABLISHED)
    assert validate_bgp(status) == [] and validate_bgp({}) == []
    # the raw FRR peer (hostname, localAs, ...) is what flexiManage's Joi schema refuses
    raw = json.loads(ESTABLISHED)["ipv4Unicast"]
    assert "bgp.vrfId is not allowed" in validate_bgp(raw)
    assert "bgp.peers['10.100.0.17'].hostname is not allowed" in validate_bgp(raw)
    assert validate_bgp({**status, "as": "65001"}) == ["bgp.as must be a number"]
    bad_key = {**status, "peers": {"peer7": status["peers"]["10.100.0.17"]}}
    assert validate_bgp(bad_key) == ["bgp.peers['peer7']: the key must be an IPv4 address"]
