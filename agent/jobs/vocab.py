"""The controller's crypto, DH, protocol and ID vocabularies mapped to IANA numbers.

Pure data plus case-insensitive look-ups. Names are the ones flexiManage puts on
the wire (`aes-cbc`, `hmac-sha2-256-128`, `modp-2048`, ...); a few legacy or
vendor spellings are accepted as aliases and resolved to the canonical name, so
error messages and the stored spec always speak one vocabulary.

Numbers are RFC 7296 / IANA "IKEv2 Parameters" transform IDs, which is what
VPP's `ikev2_set_ike_transforms` / `ikev2_set_esp_transforms` take.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from agent.peers.spec import IdType

# IANA PRF transform IDs.
PRF_HMAC_MD5 = 1
PRF_HMAC_SHA1 = 2
PRF_HMAC_SHA2_256 = 5
PRF_HMAC_SHA2_384 = 6
PRF_HMAC_SHA2_512 = 7


@dataclass(frozen=True)
class Cipher:
    """One encryption transform as the agent is willing to program it into VPP."""

    name: str  # canonical controller name
    iana: int
    key_sizes: tuple[int, ...]  # sizes (bits) the controller may choose; () = fixed-size cipher
    fixed_key_size: int  # bits, for fixed-size ciphers (key-size on the wire is ignored)
    aead: bool
    ike: bool  # allowed for the IKE SA
    esp: bool  # allowed for child SAs
    weak: bool
    vpp: bool = True  # implemented by VPP 26.06's IKEv2 plugin (ikev2_crypto.c)


@dataclass(frozen=True)
class Integrity:
    name: str
    iana: int
    prf: int | None  # PRF of the same hash, used for IKE; None for none/GMAC
    gmac: bool  # AES-GMAC: ESP only, only together with ESP NULL encryption
    weak: bool
    vpp: bool = True  # implemented by VPP 26.06's IKEv2 plugin (ikev2_crypto.c)


@dataclass(frozen=True)
class DhGroup:
    name: str
    iana: int
    weak: bool


_CIPHER_LIST: tuple[Cipher, ...] = (
    Cipher("aes-cbc", 12, (128, 192, 256), 0, aead=False, ike=True, esp=True, weak=False),
    Cipher("aes-ctr", 13, (128, 192, 256), 0, aead=False, ike=False, esp=True, weak=False),
    Cipher("aes-gcm-16", 20, (128, 192, 256), 0, aead=True, ike=True, esp=True, weak=False),
    Cipher("chacha20-poly1305", 28, (256,), 0, aead=True, ike=True, esp=True, weak=False),
    # ESP NULL (integrity only, with GMAC) is a legitimate choice. IKE NULL is not
    # (RFC 7296 3.3.2), whatever the weak-crypto policy: VPP 26.06 would also divide by
    # its block size of 0 when padding an IKE_AUTH (ikev2_payload_chain_add_padding)
    Cipher("null", 11, (), 0, aead=False, ike=False, esp=True, weak=False),
    # Named so exports and messages can say what they are; VPP 26.06 has no DES.
    Cipher("3des", 3, (), 192, aead=False, ike=True, esp=True, weak=True, vpp=False),
    Cipher("des", 2, (), 64, aead=False, ike=True, esp=True, weak=True, vpp=False),
)
CIPHERS: Mapping[str, Cipher] = MappingProxyType({c.name: c for c in _CIPHER_LIST})

# alias -> (canonical name, key size implied by the alias or None)
CIPHER_ALIASES: Mapping[str, tuple[str, int | None]] = MappingProxyType(
    {
        "aes-gcm-16-icv": ("aes-gcm-16", None),
        "aes-gcm": ("aes-gcm-16", None),
        "aes-gcm16": ("aes-gcm-16", None),
        "chacha20poly1305": ("chacha20-poly1305", None),
        "3des-cbc": ("3des", None),
        "des-cbc": ("des", None),
        **{f"aes-cbc-{n}": ("aes-cbc", n) for n in (128, 192, 256)},
        **{f"aes{n}": ("aes-cbc", n) for n in (128, 192, 256)},
        **{f"aes-ctr-{n}": ("aes-ctr", n) for n in (128, 192, 256)},
        **{f"aes-gcm-{n}": ("aes-gcm-16", n) for n in (128, 192, 256)},
        **{f"aes{n}gcm16": ("aes-gcm-16", n) for n in (128, 192, 256)},
    }
)

# In flexiManage's vocabulary but not implemented by VPP's IKEv2 plugin.
UNSUPPORTED_CIPHERS = frozenset(
    {"des-iv64", "rc5", "idea", "cast", "blowfish", "3idea", "des-iv32"}
)

_INTEG_LIST: tuple[Integrity, ...] = (
    Integrity("none", 0, None, gmac=False, weak=False),
    Integrity("sha1-96", 2, PRF_HMAC_SHA1, gmac=False, weak=False),
    Integrity("hmac-sha2-256-128", 12, PRF_HMAC_SHA2_256, gmac=False, weak=False),
    Integrity("hmac-sha2-384-192", 13, PRF_HMAC_SHA2_384, gmac=False, weak=False),
    Integrity("hmac-sha2-512-256", 14, PRF_HMAC_SHA2_512, gmac=False, weak=False),
    Integrity("aes-128-gmac", 9, None, gmac=True, weak=False),
    Integrity("aes-192-gmac", 10, None, gmac=True, weak=False),
    Integrity("aes-256-gmac", 11, None, gmac=True, weak=False),
    Integrity("md5-96", 1, PRF_HMAC_MD5, gmac=False, weak=True, vpp=False),  # no MD5 in VPP
)
INTEGRITIES: Mapping[str, Integrity] = MappingProxyType({i.name: i for i in _INTEG_LIST})

INTEG_ALIASES: Mapping[str, str] = MappingProxyType(
    {
        "hmac-sha1-96": "sha1-96",
        "sha-1-96": "sha1-96",
        "hmac-md5-96": "md5-96",
        **{
            alias: f"hmac-sha2-{bits}-{trunc}"
            for bits, trunc in ((256, 128), (384, 192), (512, 256))
            for alias in (f"sha-{bits}-{trunc}", f"sha2-{bits}-{trunc}", f"sha{bits}-{trunc}")
        },
    }
)

UNSUPPORTED_INTEGS = frozenset(
    {"des-mac", "kpdk-md5", "aes-xcbc-96", "md5-128", "sha1-160", "cmac-96"}
)

_DH_LIST: tuple[DhGroup, ...] = (
    DhGroup("none", 0, weak=False),
    DhGroup("modp-768", 1, weak=True),
    DhGroup("modp-1024", 2, weak=True),
    DhGroup("modp-1536", 5, weak=True),
    DhGroup("modp-2048", 14, weak=False),
    DhGroup("modp-3072", 15, weak=False),
    DhGroup("modp-4096", 16, weak=False),
    DhGroup("modp-6144", 17, weak=False),
    DhGroup("modp-8192", 18, weak=False),
    DhGroup("ecp-256", 19, weak=False),
    DhGroup("ecp-384", 20, weak=False),
    DhGroup("ecp-521", 21, weak=False),
    # RFC 5114 groups with small subgroups (RFC 8247: MUST NOT / SHOULD NOT)
    DhGroup("modp-1024-160", 22, weak=True),
    DhGroup("modp-2048-224", 23, weak=True),
    DhGroup("modp-2048-256", 24, weak=False),
    DhGroup("ecp-192", 25, weak=True),
)
DH_GROUPS: Mapping[str, DhGroup] = MappingProxyType({g.name: g for g in _DH_LIST})

PROTOCOLS: Mapping[str, int] = MappingProxyType({"any": 0, "icmp": 1, "tcp": 6, "udp": 17})

# "email" is the name flexiManage stores; it translates it to "rfc822" on the wire,
# but an older controller may not.
ID_TYPES: Mapping[str, IdType] = MappingProxyType(
    {t.label: t for t in IdType} | {"email": IdType.RFC822}
)
ID_TYPE_NAMES: tuple[str, ...] = tuple(sorted(t.label for t in IdType))


def _key(name: str) -> str:
    return name.strip().lower()


def lookup_cipher(name: str) -> tuple[Cipher, int | None] | None:
    """The cipher a controller name denotes and the key size its name implies."""
    key = _key(name)
    if key in CIPHERS:
        return CIPHERS[key], None
    alias = CIPHER_ALIASES.get(key)
    if alias is None:
        return None
    return CIPHERS[alias[0]], alias[1]


def lookup_integrity(name: str) -> Integrity | None:
    key = _key(name)
    return INTEGRITIES.get(INTEG_ALIASES.get(key, key))


def lookup_dh(name: str) -> DhGroup | None:
    return DH_GROUPS.get(_key(name))


def cipher_names(*, ike: bool, allow_weak: bool) -> list[str]:
    """Canonical cipher names usable for IKE (`ike=True`) or ESP under a policy."""
    return [
        c.name
        for c in _CIPHER_LIST
        if (c.ike if ike else c.esp)
        and c.vpp
        and (allow_weak or not c.weak)
    ]


def hmac_names(*, allow_weak: bool) -> list[str]:
    """HMAC integrity names (not none, not GMAC) allowed by the policy."""
    return [
        i.name for i in _INTEG_LIST
        if i.iana != 0 and not i.gmac and i.vpp and (allow_weak or not i.weak)
    ]


def gmac_names() -> list[str]:
    return [i.name for i in _INTEG_LIST if i.gmac]


def dh_names(*, allow_weak: bool, include_none: bool) -> list[str]:
    return [
        g.name for g in _DH_LIST if (allow_weak or not g.weak) and (include_none or g.iana != 0)
    ]
