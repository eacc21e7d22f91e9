"""IKE and ESP transforms and the PSK against the controller's vocabulary, VPP's
IKEv2 plugin and the local policy (see the package docstring for the decisions)."""

from __future__ import annotations

import functools

import structlog

from agent.jobs import vocab
from agent.jobs.models import TransformParams
from agent.jobs.validation.policy import (
    PSK_ALLOWED,
    PSK_MAX,
    PSK_RECOMMENDED_MIN,
    WEAK_REASON,
    ValidationPolicy,
)
from agent.jobs.validation.problems import Problems, Shown, render
from agent.peers.spec import EspTransforms, IkeTransforms

log = structlog.get_logger(__name__)


# The "allowed" text of a refusal: built from the fixed vocabulary once per policy, not
# once per request of a 1000-peer job.
@functools.cache
def _allowed_ciphers(*, ike: bool, allow_weak: bool) -> str:
    return ", ".join(vocab.cipher_names(ike=ike, allow_weak=allow_weak))


@functools.cache
def _allowed_hmacs(allow_weak: bool) -> str:
    return ", ".join(vocab.hmac_names(allow_weak=allow_weak))


@functools.cache
def _allowed_dh(allow_weak: bool) -> str:
    return ", ".join(vocab.dh_names(allow_weak=allow_weak, include_none=False))


def _cipher(
    p: Problems, fld: str, t: TransformParams, *, ike: bool, policy: ValidationPolicy
) -> tuple[vocab.Cipher, int] | None:
    weak_ok = policy.allow_weak_crypto
    allowed = _allowed_ciphers(ike=ike, allow_weak=weak_ok)
    found = vocab.lookup_cipher(t.crypto_alg)
    name_fld = f"{fld}.crypto-alg"
    if found is None:
        if t.crypto_alg.strip().lower() in vocab.UNSUPPORTED_CIPHERS:
            p.add(name_fld, t.crypto_alg, "not supported by VPP's IKEv2 plugin", allowed)
        else:
            p.add(name_fld, t.crypto_alg, "unknown encryption algorithm", allowed)
        return None
    cipher, implied = found
    if not _vpp_implements(p, name_fld, t.crypto_alg, cipher.vpp, allowed):
        return None
    if ike and not cipher.ike:
        p.add(name_fld, t.crypto_alg, f"{cipher.name} is for ESP only, not IKE", allowed)
        return None
    if cipher.weak:
        if not weak_ok:
            p.add(
                name_fld,
                t.crypto_alg,
                WEAK_REASON,
                allowed,
            )
            return None
        p.weak_fields.append(name_fld)
    if not cipher.key_sizes:
        return cipher, cipher.fixed_key_size
    size_fld = f"{fld}.key-size"
    sizes = ", ".join(str(s) for s in cipher.key_sizes)
    size = t.key_size
    if size is None:
        if implied is None:
            p.add(size_fld, Shown("(missing)"), f"required with {cipher.name}", sizes)
            return None
        size = implied
    elif implied is not None and size != implied:
        p.add(
            size_fld,
            size,
            f"conflicts with {render(t.crypto_alg)} which implies {implied}",
            str(implied),
        )
        return None
    if size not in cipher.key_sizes:
        p.add(size_fld, size, f"not a key size of {cipher.name}", sizes)
        return None
    return cipher, size


def _integrity(
    p: Problems, fld: str, name: str, policy: ValidationPolicy, allowed: str
) -> vocab.Integrity | None:
    integ = vocab.lookup_integrity(name)
    if integ is None:
        if name.strip().lower() in vocab.UNSUPPORTED_INTEGS:
            p.add(fld, name, "not supported by VPP's IKEv2 plugin", allowed)
        else:
            p.add(fld, name, "unknown integrity algorithm", allowed)
        return None
    if not _vpp_implements(p, fld, name, integ.vpp, allowed):
        return None
    return integ if _weak_allowed(p, fld, name, integ.weak, policy, allowed) else None


def _vpp_implements(p: Problems, fld: str, name: str, implemented: bool, allowed: str) -> bool:
    """Refuse what VPP 26.06's IKEv2 plugin lacks (DES, 3DES, MD5), whatever the weak-crypto
    policy: VPP would accept the profile and fail every negotiation later."""
    if not implemented:
        p.add(fld, name, "not implemented by VPP 26.06's IKEv2 plugin (refused even with "
                         "allow_weak_crypto)", allowed)
    return implemented


def _weak_allowed(p: Problems, fld: str, name: str, weak: bool, policy: ValidationPolicy,
                  allowed: str) -> bool:
    """Refuse a weak choice unless the policy allows it (then remember it for the log)."""
    if not weak:
        return True
    if not policy.allow_weak_crypto:
        p.add(fld, name, WEAK_REASON, allowed)
        return False
    p.weak_fields.append(fld)
    return True


def _dh(
    p: Problems, fld: str, name: str, policy: ValidationPolicy, *, required: bool
) -> vocab.DhGroup | None:
    allowed = _allowed_dh(policy.allow_weak_crypto)
    group = vocab.lookup_dh(name)
    if group is None:
        if required and not name.strip():
            p.add(fld, name, "a DH group is required for IKE", allowed)
        else:
            p.add(fld, name, "unknown DH group", allowed)
        return None
    if required and group.iana == 0:
        p.add(fld, name, "a DH group is required for IKE", allowed)
        return None
    return group if _weak_allowed(p, fld, name, group.weak, policy, allowed) else None


def ike_transforms(
    p: Problems, t: TransformParams, policy: ValidationPolicy
) -> IkeTransforms | None:
    fld = "ikev2.ike"
    hmacs = _allowed_hmacs(policy.allow_weak_crypto)
    found = _cipher(p, fld, t, ike=True, policy=policy)
    integ_allowed = f"none, {hmacs}" if found is not None and found[0].aead else hmacs
    integ = _integrity(p, f"{fld}.integ-alg", t.integ_alg, policy, integ_allowed)
    dh = _dh(p, f"{fld}.dh-group", t.dh_group, policy, required=True)
    if found is None or integ is None or dh is None:
        return None
    cipher, size = found
    if integ.gmac:
        p.add(f"{fld}.integ-alg", t.integ_alg, "AES-GMAC is for ESP only, not IKE", integ_allowed)
        return None
    if cipher.aead:
        # See the package docstring: an HMAC given with an AEAD cipher selects the PRF.
        prf = integ.prf if integ.prf is not None else vocab.PRF_HMAC_SHA2_256
        return IkeTransforms(cipher.iana, size, 0, prf, dh.iana)
    if integ.prf is None:
        p.add(
            f"{fld}.integ-alg",
            t.integ_alg,
            f"an integrity algorithm is required with {cipher.name}",
            hmacs,
        )
        return None
    return IkeTransforms(cipher.iana, size, integ.iana, integ.prf, dh.iana)


def esp_transforms(
    p: Problems, t: TransformParams, pfs: bool, ike_dh: int | None, policy: ValidationPolicy
) -> EspTransforms | None:
    fld = "ikev2.esp"
    hmacs = _allowed_hmacs(policy.allow_weak_crypto)
    found = _cipher(p, fld, t, ike=False, policy=policy)
    integ_fld = f"{fld}.integ-alg"
    integ = _integrity(p, integ_fld, t.integ_alg, policy, hmacs)
    dh_group = _esp_dh(p, t.dh_group, pfs, ike_dh, policy)
    if found is None or integ is None or dh_group is None:
        return None
    cipher, size = found
    if cipher.aead and integ.iana != 0:
        p.add(integ_fld, t.integ_alg, f"must be none with AEAD cipher {cipher.name}", "none")
        return None
    if cipher.name == "null" and not integ.gmac:
        p.add(
            integ_fld,
            t.integ_alg,
            "null encryption needs AES-GMAC integrity",
            ", ".join(vocab.gmac_names()),
        )
        return None
    if not cipher.aead and cipher.name != "null":
        if integ.gmac:
            p.add(integ_fld, t.integ_alg, "AES-GMAC integrity only with null encryption", hmacs)
            return None
        if integ.iana == 0:
            p.add(
                integ_fld,
                t.integ_alg,
                f"an integrity algorithm is required with {cipher.name}",
                hmacs,
            )
            return None
    return EspTransforms(cipher.iana, size, integ.iana, dh_group)


def _esp_dh(
    p: Problems, name: str, pfs: bool, ike_dh: int | None, policy: ValidationPolicy
) -> int | None:
    fld = "ikev2.esp.dh-group"
    key = name.strip().lower()
    if not pfs:
        if key in ("", "none"):
            return 0
        p.add(fld, name, "a PFS group with pfs false", "'' or none unless pfs is true")
        return None
    if key == "":
        return ike_dh if ike_dh is not None else 0  # 0 only when the IKE group is already rejected
    if key == "none":
        p.add(fld, name, "pfs is true but the group is none", "'' (the IKE group) or a DH group")
        return None
    group = _dh(p, fld, name, policy, required=False)
    return None if group is None else group.iana


def check_psk(p: Problems, psk: str, tunnel_id: int | None, policy: ValidationPolicy) -> bool:
    # surrogatepass: a lone surrogate (valid JSON "\ud800") is refused below, not a crash
    size = len(psk.encode("utf-8", "surrogatepass"))
    shown = Shown(f"{size} bytes")
    if size == 0 or size > PSK_MAX:
        p.add("ikev2.psk", shown, "empty" if size == 0 else "too long", PSK_ALLOWED)
        return False
    if size < policy.psk_min_length:
        p.add("ikev2.psk", shown,
              f"too short for the device's security policy ([security] psk_min_length = "
              f"{policy.psk_min_length})", f"at least {policy.psk_min_length} bytes")
        return False
    # Every whitespace character but the ASCII space, every surrogate and every control
    # character is non-printable: a printable PSK without a space passes all three
    # checks below, which walk it character by character to name the problem.
    if not psk.isprintable() or " " in psk:
        if any(ch.isspace() for ch in psk):
            p.add("ikev2.psk", shown, "contains whitespace", PSK_ALLOWED)
            return False
        if any("\ud800" <= ch <= "\udfff" for ch in psk):  # cannot become UTF-8 for VPP
            p.add("ikev2.psk", shown, "not valid Unicode text (a lone surrogate)",
                  PSK_ALLOWED)
            return False
        p.add("ikev2.psk", shown, "contains control characters", PSK_ALLOWED)
        return False
    if size < PSK_RECOMMENDED_MIN:
        log.warning(
            "psk_shorter_than_recommended",
            tunnel_id=tunnel_id,
            length=size,
            recommended_min=PSK_RECOMMENDED_MIN,
        )
    return True
