"""IANA IKEv2 transform numbers and IKE identities in strongSwan's vocabulary.

The one home of strongSwan's spelling: `peerctl peer export` (`agent.admin.export`)
writes swanctl.conf proposals and IDs with it, and the lab's strongSwan backend
(vppsim) turns VPP profiles into VICI connections and reads charon's `list-sas`
back with it. Numbers are the RFC 7296 / IANA ones VPP's API carries (the
controller's names for them are in `agent.jobs.vocab`). Pure data and look-ups.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from agent.peers.spec import IdType


class NoKeyword(ValueError):
    """A transform or ID type strongSwan has no keyword for (in this table)."""


# proposal keywords; {bits} is the key size
ENCR: Mapping[int, str] = MappingProxyType({
    12: "aes{bits}", 13: "aes{bits}ctr", 20: "aes{bits}gcm16", 28: "chacha20poly1305",
    11: "null", 3: "3des", 2: "des",
})
AEAD_ENCR = frozenset({20, 28})  # AES-GCM-16, ChaCha20-Poly1305: no integrity transform
INTEG: Mapping[int, str] = MappingProxyType({
    1: "md5", 2: "sha1", 12: "sha256", 13: "sha384", 14: "sha512",
})
# AES-GMAC integrity -> its key bits: strongSwan only knows it as the combined
# ENCR_NULL_AUTH_AES_GMAC, keyword aes<bits>gmac
GMAC_BITS: Mapping[int, int] = MappingProxyType({9: 128, 10: 192, 11: 256})
PRF: Mapping[int, str] = MappingProxyType({
    1: "prfmd5", 2: "prfsha1", 5: "prfsha256", 6: "prfsha384", 7: "prfsha512",
})
# the PRF strongSwan derives from an integrity keyword when a proposal names none
IMPLIED_PRF: Mapping[int, int] = MappingProxyType({1: 1, 2: 2, 12: 5, 13: 6, 14: 7})
DH: Mapping[int, str] = MappingProxyType({
    1: "modp768", 2: "modp1024", 5: "modp1536", 14: "modp2048", 15: "modp3072",
    16: "modp4096", 17: "modp6144", 18: "modp8192", 19: "ecp256", 20: "ecp384",
    21: "ecp521", 22: "modp1024s160", 23: "modp2048s224", 24: "modp2048s256",
    25: "ecp192", 31: "curve25519",
})

# the names charon's list-sas reports -> IANA numbers
ENCR_BY_NAME: Mapping[str, int] = MappingProxyType({
    "AES_CBC": 12, "AES_CTR": 13, "AES_GCM_16": 20, "CHACHA20_POLY1305": 28, "NULL": 11,
    "3DES": 3,
})
INTEG_BY_NAME: Mapping[str, int] = MappingProxyType({
    "HMAC_MD5_96": 1, "HMAC_SHA1_96": 2, "HMAC_SHA2_256_128": 12, "HMAC_SHA2_384_192": 13,
    "HMAC_SHA2_512_256": 14,
})
PRF_BY_NAME: Mapping[str, int] = MappingProxyType({
    "PRF_HMAC_MD5": 1, "PRF_HMAC_SHA1": 2, "PRF_HMAC_SHA2_256": 5, "PRF_HMAC_SHA2_384": 6,
    "PRF_HMAC_SHA2_512": 7,
})
DH_BY_NAME: Mapping[str, int] = MappingProxyType({name.upper(): num for num, name in DH.items()} | {
    "ECP_256": 19, "ECP_384": 20, "ECP_521": 21, "MODP_2048": 14, "MODP_3072": 15,
    "MODP_4096": 16, "MODP_1024": 2, "MODP_1536": 5, "CURVE_25519": 31, "ECP_192": 25,
    "MODP_6144": 17, "MODP_8192": 18,
})

IP6_ADDR = 5  # VPP's and RFC 7296's ID_IPV6_ADDR (the agent itself uses IPv4 only)


def _keyword(table: Mapping[int, str], iana: int, what: str) -> str:
    try:
        return table[iana]
    except KeyError:
        raise NoKeyword(f"{what} {iana} has no strongSwan keyword") from None


def encr_keyword(iana: int, bits: int) -> str:
    """e.g. aes256, aes128gcm16, chacha20poly1305 (fixed-size ciphers ignore `bits`)."""
    return _keyword(ENCR, iana, "encryption algorithm").format(bits=bits)


def integ_keyword(iana: int) -> str:
    """e.g. sha256; AES-GMAC as the combined keyword (aes128gmac)."""
    if iana in GMAC_BITS:
        return f"aes{GMAC_BITS[iana]}gmac"
    return _keyword(INTEG, iana, "integrity transform")


def prf_keyword(iana: int) -> str:
    return _keyword(PRF, iana, "PRF")


def dh_keyword(iana: int) -> str:
    return _keyword(DH, iana, "DH group")


def identity(id_type: int, text: str) -> str:
    """An IKE identity as swanctl.conf and VICI take it: an address bare (strongSwan
    reads "ipv4:" as raw bytes and parses a plain address as an IP ID), the other
    types behind their prefix (fqdn:, rfc822:)."""
    if id_type in (IdType.IP4_ADDR, IP6_ADDR):
        return text
    try:
        return IdType(id_type).label + ":" + text
    except ValueError:
        raise NoKeyword(f"ID type {id_type} has no strongSwan prefix here") from None
