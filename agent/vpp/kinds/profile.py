"""The IKEv2 profile bound to the tunnel, and the initiation when we are initiator.

Its name, `peer-<tunnel-id>`, is the agent's mark on the profiles it made: only
`profile_name` builds it and only `tunnel_of_profile` reads it back.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import TYPE_CHECKING, Any

from agent.iptext import ip_text
from agent.peers.spec import (
    EspTransforms,
    Identity,
    IdType,
    IkeTransforms,
    PeerSpec,
    TrafficSelector,
)
from agent.vpp.client import decode_ikev2_id
from agent.vpp.kinds.base import Kind, Observed
from agent.vpp.kinds.tunnel import tunnel_ref
from agent.vpp.ops import CapabilityError, Gap, Op, VppFacts

if TYPE_CHECKING:
    from agent.vpp.client import VppClient

AUTH_SHARED_KEY_MIC = 2
PREFIX = "peer-"
# VPP's profile dump shows at most 63 bytes of an IKE ID (a 64-byte field with its NUL)
VPP_ID_SHOWN = 63


def profile_name(tunnel_id: int) -> str:
    return f"{PREFIX}{tunnel_id}"


def tunnel_of_profile(name: str) -> int | None:
    """The tunnel id of a profile the agent named, None for any other profile."""
    num = name.removeprefix(PREFIX)
    if name.startswith(PREFIX) and num.isdigit() and num == str(int(num)):
        return int(num)
    return None


@dataclass(frozen=True)
class ProfileInfo:
    name: str
    auth_method: int
    auth_data: bytes
    local_id: tuple[int, str]
    remote_id: tuple[int, str]
    local_ts: TrafficSelector
    remote_ts: TrafficSelector
    ike: IkeTransforms
    esp: EspTransforms
    lifetime: int
    tun_itf: int
    responder_sw_if_index: int
    responder_addr: IPv4Address | None
    udp_encap: bool


def _ts(ts: Any) -> TrafficSelector:
    return TrafficSelector(int(ts.protocol_id), int(ts.start_port), int(ts.end_port),
                           IPv4Address(str(ts.start_addr)), IPv4Address(str(ts.end_addr)))


def profile_info(p: Any) -> ProfileInfo:
    addr = p.responder.addr
    return ProfileInfo(
        name=str(p.name),
        auth_method=int(p.auth.method),
        auth_data=bytes(p.auth.data),
        local_id=decode_ikev2_id(p.loc_id),
        remote_id=decode_ikev2_id(p.rem_id),
        local_ts=_ts(p.loc_ts),
        remote_ts=_ts(p.rem_ts),
        ike=IkeTransforms(int(p.ike_ts.crypto_alg), int(p.ike_ts.crypto_key_size),
                          int(p.ike_ts.integ_alg), int(p.ike_ts.prf_alg), int(p.ike_ts.dh_group)),
        esp=EspTransforms(int(p.esp_ts.crypto_alg), int(p.esp_ts.crypto_key_size),
                          int(p.esp_ts.integ_alg)),
        lifetime=int(p.lifetime),
        tun_itf=int(p.tun_itf),
        responder_sw_if_index=int(p.responder.sw_if_index),
        responder_addr=IPv4Address(str(addr)) if str(addr) not in ("", "0.0.0.0", "::") else None,
        udp_encap=bool(p.udp_encap),
    )


def identity_bytes(kind: IdType, value: str) -> bytes:
    """VPP wants ip4-addr IDs as the 4 packed bytes, others as text."""
    if kind == IdType.IP4_ADDR:
        return _packed(value)
    return value.encode("ascii")


@functools.lru_cache(maxsize=1024)
def _packed(address: str) -> bytes:  # a job's local ID is the same in every request
    return IPv4Address(address).packed


def child_sa_lifetime(lifetime: int) -> tuple[int, int, int]:
    """(lifetime, lifetime_jitter, handover) to program for a configured child SA lifetime.

    VPP (as initiator) rekeys at `lifetime` + random(0..`lifetime_jitter`) and retries
    a rekey every `handover` seconds. So the jitter (spreading the rekeys of many
    tunnels) and one retry interval are taken off the configured lifetime: the first
    rekey and its first retry both happen before the SA reaches that lifetime.
    """
    jitter = min(lifetime // 10, 300)
    handover = max(1, min(lifetime // 20, 60))
    return lifetime - jitter - handover, jitter, handover


def _ts_args(ts: TrafficSelector, is_local: bool) -> dict[str, Any]:
    return {
        "sa_index": 0,
        "child_sa_index": 0,
        "is_local": is_local,
        "protocol_id": ts.protocol,
        "start_port": ts.start_port,
        "end_port": ts.end_port,
        "start_addr": ts.start_addr,
        "end_addr": ts.end_addr,
    }


def delete_profile_op(tid: int, name: str, what: str = "") -> Op:
    return Op("ikev2_profile_add_del", {"name": name, "is_add": False},
              f"tunnel {tid}: {what or f'delete IKEv2 profile {name}'}", tunnel_id=tid)


def profile_ops(spec: PeerSpec, facts: VppFacts, *, initiate: bool = True) -> list[Op]:
    """The IKEv2 profile bound to the tunnel, and the initiation when we are initiator."""
    tid = spec.tunnel_id
    name = profile_name(tid)
    ref = tunnel_ref(tid)
    dst = ip_text(spec.dst)

    def op(message: str, args: dict[str, Any], what: str) -> Op:
        return Op(message, {"name": name, **args}, f"tunnel {tid}: {what}", tunnel_id=tid)

    ops = [
        Op("ikev2_profile_add_del", {"name": name, "is_add": True},
           f"tunnel {tid}: create IKEv2 profile {name}", undo=(delete_profile_op(tid, name),),
           tunnel_id=tid),
        op("ikev2_profile_set_auth",
           {"auth_method": AUTH_SHARED_KEY_MIC, "is_hex": False,
            "data_len": len(spec.psk.reveal().encode()), "data": spec.psk},
           "set PSK authentication"),
    ]
    for is_local, ident in ((True, spec.local_id), (False, spec.remote_id)):
        data = identity_bytes(ident.type, ident.value)
        side = "local" if is_local else "remote"
        ops.append(op("ikev2_profile_set_id",
                      {"is_local": is_local, "id_type": int(ident.type), "data_len": len(data),
                       "data": data},
                      f"set {side} ID {ident.type.name.lower().replace('_', '-')} {ident.value}"))
    ops.append(op("ikev2_profile_set_ts", {"ts": _ts_args(spec.local_ts, True)},
                  "set local traffic selector"))
    ops.append(op("ikev2_profile_set_ts", {"ts": _ts_args(spec.remote_ts, False)},
                  "set remote traffic selector"))
    ike = spec.ike
    ops.append(op("ikev2_set_ike_transforms",
                  {"tr": {"crypto_alg": ike.crypto_alg, "crypto_key_size": ike.crypto_key_size,
                          "integ_alg": ike.integ_alg, "prf_alg": ike.prf_alg,
                          "dh_group": ike.dh_group}},
                  "set IKE transforms"))
    esp = spec.esp
    ops.append(op("ikev2_set_esp_transforms",
                  {"tr": {"crypto_alg": esp.crypto_alg, "crypto_key_size": esp.crypto_key_size,
                          "integ_alg": esp.integ_alg}},
                  "set ESP transforms"))
    lifetime, jitter, handover = child_sa_lifetime(spec.child_lifetime)
    ops.append(op("ikev2_set_sa_lifetime",
                  {"lifetime": lifetime, "lifetime_jitter": jitter,
                   "handover": handover, "lifetime_maxdata": 0},
                  f"set child SA lifetime {spec.child_lifetime} s (rekey after "
                  f"{lifetime}-{lifetime + jitter} s, retried every {handover} s)"))
    if "ikev2_set_ike_lifetime" in facts.optional_messages:
        ops.append(op("ikev2_set_ike_lifetime", {"lifetime": spec.ike_lifetime},
                      f"set IKE SA lifetime {spec.ike_lifetime} s"))
    if spec.pfs and "ikev2_set_pfs" in facts.optional_messages:
        ops.append(op("ikev2_set_pfs", {"dh_group": spec.esp.dh_group}, "enable PFS"))
    if spec.udp_encap:
        ops.append(op("ikev2_profile_set_udp_encap", {}, "force UDP encapsulation"))
    ops.append(op("ikev2_set_tunnel_interface", {"sw_if_index": ref}, "bind the tunnel interface"))
    ops.append(op("ikev2_set_responder",
                  {"responder": {"sw_if_index": facts.wan_sw_if_index, "addr": spec.dst}},
                  f"set responder {dst}"))
    if initiate and spec.role == "initiator":
        ops.append(op("ikev2_initiate_sa_init", {}, f"initiate IKE SA to {dst}"))
    return ops


def recreate_ops(spec: PeerSpec, facts: VppFacts, why: str) -> list[Op]:
    """Delete the profile VPP has and create it anew (with the initiation when we are
    initiator): VPP has no way to change a profile's settings in place, and deleting
    it is the only way to drop the initiations still pending for it."""
    tid = spec.tunnel_id
    return [delete_profile_op(tid, profile_name(tid), why), *profile_ops(spec, facts)]


def profile_differences(spec: PeerSpec, info: ProfileInfo, tun_sw_if_index: int,
                        wan_sw_if_index: int) -> list[str]:
    """Names of the profile settings that differ from the spec (never their values)."""
    diffs: list[str] = []
    if info.auth_method != AUTH_SHARED_KEY_MIC or info.auth_data != spec.psk.reveal().encode():
        diffs.append("auth")
    for label, have, want in (("local id", info.local_id, spec.local_id),
                              ("remote id", info.remote_id, spec.remote_id)):
        if not _same_id(have, want):
            diffs.append(label)
    if info.local_ts != spec.local_ts:
        diffs.append("local ts")
    if info.remote_ts != spec.remote_ts:
        diffs.append("remote ts")
    if info.ike != spec.ike:
        diffs.append("ike transforms")
    want_esp = (spec.esp.crypto_alg, spec.esp.crypto_key_size, spec.esp.integ_alg)
    if (info.esp.crypto_alg, info.esp.crypto_key_size, info.esp.integ_alg) != want_esp:
        diffs.append("esp transforms")
    if info.lifetime != child_sa_lifetime(spec.child_lifetime)[0]:
        diffs.append("lifetime")
    if info.tun_itf != tun_sw_if_index:
        diffs.append("tunnel binding")
    if info.responder_sw_if_index != wan_sw_if_index or info.responder_addr != spec.dst:
        diffs.append("responder")
    if info.udp_encap != spec.udp_encap:
        diffs.append("udp encap")
    return diffs


def _same_id(have: tuple[int, str], want: Identity) -> bool:
    """Whether VPP's (possibly truncated) ID is the spec's: a long FQDN must not make
    every reconcile re-create the profile (and flap the tunnel)."""
    if have[0] != int(want.type):
        return False
    if have[1] == want.value:
        return True
    shown = want.value.encode()[:VPP_ID_SHOWN]
    return have[1].encode().rstrip(b"\0") == shown


# VPP 26.06 takes an ECP shared secret as the point's x and y (ikev2_complete_dh in
# src/plugins/ikev2/ikev2_crypto.c); RFC 5903 (section 9 as corrected) and standard
# peers take x alone. The keys then differ, and the peer drops VPP's IKE_AUTH.
ECP_GAP = ("its IKE DH group is an ECP group: VPP 26.06 derives the shared secret from the "
           "point's x and y, RFC 5903 peers from x alone, so a standard peer cannot read "
           "VPP's IKE_AUTH and the tunnel does not come up (seen with strongSwan 5.9.8); use "
           "a MODP group such as modp-2048")


class ProfileKind(Kind):
    name = "ikev2-profile"

    def check(self, spec: PeerSpec, facts: VppFacts) -> tuple[Gap, ...]:
        """Refuse what VPP would silently do differently; warn about benign gaps."""
        tid = spec.tunnel_id
        warnings: list[Gap] = []
        if spec.role == "responder":
            # VPP as responder picks from the peer's proposals whatever it implements,
            # ignoring the profile's transforms, and never rekeys (the peer does).
            warnings.append(Gap(
                tid, "as responder VPP accepts any proposal it "
                "implements, not only the configured IKE/ESP transforms, and never rekeys: "
                "the peer's proposals and lifetimes decide (configure them as exported)"))
            if spec.pfs:
                # ...and it accepts a key exchange in the peer's rekeys: PFS is the peer's.
                warnings.append(Gap(
                    tid, "PFS happens only if the peer proposes the DH "
                    "group in its rekeys (VPP as responder accepts it but cannot require it)"))
        elif spec.pfs and "ikev2_set_pfs" not in facts.optional_messages:
            raise CapabilityError(
                f"tunnel {spec.tunnel_id}: ikev2.pfs is true, but this VPP has no "
                "ikev2_set_pfs (stock VPP rekeys child SAs without a key exchange, so PFS "
                "would silently be off); set pfs to false or use a VPP build with PFS support"
            )
        if spec.ike.ecp:
            warnings.append(Gap(tid, ECP_GAP))
        if "ikev2_set_ike_lifetime" not in facts.optional_messages:
            warnings.append(Gap(
                tid, "VPP cannot set the IKE SA lifetime "
                f"(ike_lifetime {spec.ike_lifetime} s is not applied; VPP keeps its own IKE SA "
                "until it is deleted, the peer's lifetime decides IKE rekeys)"
            ))
        return tuple(warnings)

    def create(self, spec: PeerSpec, facts: VppFacts,
               extra_routes: Sequence[IPv4Address]) -> list[Op]:
        return profile_ops(spec, facts)

    async def read(self, vpp: VppClient, obs: Observed) -> Any:
        return await vpp.dump("ikev2_profile_dump")

    def absorb(self, raw: Any, obs: Observed) -> None:
        for p in raw:
            if str(p.profile.name).startswith(PREFIX):
                info = profile_info(p.profile)
                obs.profiles[info.name] = info

    def owned(self, obs: Observed) -> set[int]:
        return {t for t in map(tunnel_of_profile, obs.profiles) if t is not None}

    def repair(self, spec: PeerSpec, facts: VppFacts, obs: Observed, sw: int,
               extra_routes: Sequence[IPv4Address]) -> tuple[list[Op], str | None]:
        name = profile_name(spec.tunnel_id)
        info = obs.profiles.get(name)
        diffs = (["missing"] if info is None
                 else profile_differences(spec, info, sw, facts.wan_sw_if_index))
        if not diffs:
            return [], None
        ops = (profile_ops(spec, facts) if info is None
               else recreate_ops(spec, facts, "delete outdated profile"))
        return ops, f"profile {', '.join(diffs)}: re-creating it"

    def delete(self, tid: int, sw: int | None, obs: Observed) -> list[Op]:
        name = profile_name(tid)
        return [delete_profile_op(tid, name)] if name in obs.profiles else []


KIND = ProfileKind()
