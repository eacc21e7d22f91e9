"""The real vpp-papi 2.4.2 clients (sync and async) program a complete IKEv2 peer."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from pathlib import Path
from typing import Any

import pytest
from vpp_papi import VPPApiClient
from vpp_papi.vpp_papi_async import VPPApiClient as AsyncVPPApiClient
from vppsim_helpers import WAN, wait_for

from agent.lab.vppsim.api import DEFS_DIR
from agent.lab.vppsim.server import VppSim, running_in_thread

PSK = b"not-a-real-psk-0123456789"
PEER = "203.0.113.1"
# The remote ip4-addr ID. VPP returns it as 4 raw bytes in a `string` field, which
# papi decodes as strict ASCII: 100.64.1.1 (64 40 01 01) happens to survive that,
# the peer's own address (cb 00 71 01) would not (see test_async_client).
REMOTE_ID = "100.64.1.1"


def peer_calls() -> list[tuple[str, dict[str, Any]]]:
    """The configuration requests of one peer, after the tunnel (sw_if_index 2) exists."""
    p = "peer1"
    ts = {"protocol_id": 0, "start_port": 0, "end_port": 65535}
    return [
        (
            "sw_interface_add_del_address",
            {"sw_if_index": 2, "is_add": True, "prefix": "10.255.0.0/31"},
        ),
        ("ikev2_profile_add_del", {"name": p, "is_add": True}),
        (
            "ikev2_profile_set_auth",
            {"name": p, "auth_method": 2, "is_hex": False, "data_len": len(PSK), "data": PSK},
        ),
        (
            "ikev2_profile_set_id",
            {"name": p, "is_local": True, "id_type": 2, "data_len": 9, "data": b"a.example"},
        ),
        (
            "ikev2_profile_set_id",
            {
                "name": p,
                "is_local": False,
                "id_type": 1,
                "data_len": 4,
                "data": ipaddress.IPv4Address(REMOTE_ID).packed,
            },
        ),
        (
            "ikev2_profile_set_ts",
            {
                "name": p,
                "ts": ts
                | {"is_local": True, "start_addr": "0.0.0.0", "end_addr": "255.255.255.255"},
            },
        ),
        (
            "ikev2_profile_set_ts",
            {
                "name": p,
                "ts": ts
                | {"is_local": False, "start_addr": "0.0.0.0", "end_addr": "255.255.255.255"},
            },
        ),
        (
            "ikev2_set_ike_transforms",
            {
                "name": p,
                "tr": {
                    "crypto_alg": 20,
                    "crypto_key_size": 256,
                    "integ_alg": 0,
                    "prf_alg": 5,
                    "dh_group": 14,  # an ECP group's IKE_AUTH fails, as on VPP 26.06
                },
            },
        ),
        (
            "ikev2_set_esp_transforms",
            {"name": p, "tr": {"crypto_alg": 20, "crypto_key_size": 256, "integ_alg": 0}},
        ),
        (
            "ikev2_set_sa_lifetime",
            {
                "name": p,
                "lifetime": 3600,
                "lifetime_jitter": 10,
                "handover": 5,
                "lifetime_maxdata": 0,
            },
        ),
        ("ikev2_set_tunnel_interface", {"name": p, "sw_if_index": 2}),
        ("ikev2_set_responder", {"name": p, "responder": {"sw_if_index": 1, "addr": PEER}}),
        ("ikev2_initiate_sa_init", {"name": p}),
    ]


TUNNEL = {"instance": 0xFFFFFFFF, "src": "192.168.1.10", "dst": PEER, "table_id": 0, "mode": 0}


def check_profile_cli(text: str) -> None:
    assert "profile peer1\n" in text
    assert f"  auth-method shared-key-mic auth data {PSK.decode()}\n" in text
    assert "  local id-type fqdn data a.example\n" in text
    assert f"  remote id-type ip4-addr data {REMOTE_ID}\n" in text
    assert "  protected tunnel ipip0\n" in text
    assert f"  responder GigabitEthernet0/3/0 {PEER} \n" in text
    assert "  ike-crypto-alg aes-gcm-16 256 ike-integ-alg none ike-dh modp-2048\n" in text
    assert "  lifetime 3600 jitter 10 handover 5 maxdata 0\n" in text


def run_sync(client: VPPApiClient) -> None:
    api = client.api
    r = api.ipip_add_tunnel(tunnel=TUNNEL)
    assert (r.retval, r.sw_if_index) == (0, 2)
    for name, args in peer_calls():
        assert getattr(api, name)(**args).retval == 0, name
    deadline = time.monotonic() + 3
    while True:
        sas = api.ikev2_sa_v2_dump()
        if sas and sas[0].sa.state == 4:
            break
        assert time.monotonic() < deadline, "SA never AUTHENTICATED"
        time.sleep(0.01)
    assert sas[0].sa.profile_name == "peer1"
    assert sas[0].sa.r_id.data == ipaddress.IPv4Address(REMOTE_ID).packed.decode("ascii")
    assert (sas[0].sa.i_id.type, sas[0].sa.i_id.data) == (2, "a.example")
    children = api.ikev2_child_sa_dump(sa_index=sas[0].sa.sa_index)
    assert len(children) == 1 and children[0].child_sa.i_spi != 0
    itf = api.sw_interface_dump(sw_if_index=2)
    assert itf[0].interface_name == "ipip0" and int(itf[0].flags) == 3
    addrs = api.ip_address_dump(sw_if_index=2, is_ipv6=False)
    assert [str(a.prefix) for a in addrs] == ["10.255.0.0/31"]
    check_profile_cli(api.cli_inband(cmd="show ikev2 profile").reply)


@pytest.mark.parametrize("bootstrap", [False, True], ids=["apidir", "bootstrapapi"])
def test_sync_client(tmp_path: Path, bootstrap: bool) -> None:
    sock = tmp_path / "api.sock"
    with running_in_thread(sock, interfaces=WAN) as t:
        if bootstrap:
            client = VPPApiClient(bootstrapapi=True, server_address=str(sock))
        else:
            client = VPPApiClient(apidir=str(DEFS_DIR), server_address=str(sock))
        client.connect("sync-test")
        try:
            run_sync(client)
        finally:
            client.disconnect()
        snap = t.call(t.sim.snapshot)
        assert snap["profiles"]["peer1"]["auth"]["data"] == PSK
        assert snap["profiles"]["peer1"]["rem_id"] == (1, ipaddress.IPv4Address(REMOTE_ID).packed)
        assert t.sim.message_counts["ikev2_profile_set_id"] == 2


async def test_async_client(sim: VppSim) -> None:
    client = AsyncVPPApiClient(server_address=str(sim.socket_path))
    assert await client.connect("async-test", asyncio.Queue()) == 0
    try:
        api = client.api
        r = await api.ipip_add_tunnel(tunnel=TUNNEL)
        assert (r.retval, r.sw_if_index) == (0, 2)
        for name, args in peer_calls():
            assert (await getattr(api, name)(**args)).retval == 0, name

        async def up() -> Any:
            _ping, sas = await api.ikev2_sa_v2_dump()
            return sas if sas and sas[0].sa.state == 4 else None

        sas = await wait_for(up)
        _ping, children = await api.ikev2_child_sa_dump(sa_index=sas[0].sa.sa_index)
        assert len(children) == 1
        _ping, itfs = await api.sw_interface_dump(sw_if_index=2)
        assert int(itfs[0].flags) == 3
        check_profile_cli((await api.cli_inband(cmd="show ikev2 profile")).reply)
        # An ip4-addr ID of 203.0.113.1 is raw bytes papi cannot decode (as with VPP).
        peer_id = ipaddress.IPv4Address(PEER).packed
        set_id = {"name": "peer1", "is_local": False, "id_type": 1, "data_len": 4, "data": peer_id}
        assert (await api.ikev2_profile_set_id(**set_id)).retval == 0
        with pytest.raises(UnicodeDecodeError):
            client.decode_incoming_msg(_raw_profile_details(sim))
        assert sim.snapshot()["profiles"]["peer1"]["rem_id"] == (1, peer_id)
        sa_text = (await api.cli_inband(cmd="show ikev2 sa details")).reply
        assert (
            " state: AUTHENTICATED" in sa_text
            and "identifier (i) id-type fqdn data a.example" in sa_text
        )
    finally:
        await client.disconnect()


def _raw_profile_details(sim: VppSim) -> bytes:
    replies = sim.handlers.on_ikev2_profile_dump(None)
    name, fields = replies[0]
    fields["context"] = 1
    md = sim.catalog.by_name[name]
    return md.codec.pack(fields | {"_vl_msg_id": md.msg_id})
