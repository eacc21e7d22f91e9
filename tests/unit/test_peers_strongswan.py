"""strongSwan's vocabulary: every transform the controller can choose has a keyword."""

from __future__ import annotations

import pytest

from agent.jobs import vocab
from agent.peers import strongswan
from agent.peers.spec import IdType


def test_every_controller_transform_has_a_strongswan_keyword() -> None:
    for c in vocab.CIPHERS.values():
        assert strongswan.encr_keyword(c.iana, 256)
    for i in vocab.INTEGRITIES.values():
        if i.iana:
            assert strongswan.integ_keyword(i.iana)
        if i.prf is not None:
            assert strongswan.prf_keyword(i.prf)
    for g in vocab.DH_GROUPS.values():
        if g.iana:
            assert strongswan.DH_BY_NAME[strongswan.dh_keyword(g.iana).upper()] == g.iana


def test_keywords() -> None:
    assert strongswan.encr_keyword(12, 128) == "aes128"
    assert strongswan.encr_keyword(20, 256) == "aes256gcm16"
    assert strongswan.encr_keyword(28, 256) == "chacha20poly1305"
    assert strongswan.integ_keyword(12) == "sha256"
    assert strongswan.integ_keyword(10) == "aes192gmac"
    assert strongswan.dh_keyword(24) == "modp2048s256"
    with pytest.raises(strongswan.NoKeyword, match="DH group 99"):
        strongswan.dh_keyword(99)
    with pytest.raises(strongswan.NoKeyword, match="encryption algorithm 4"):
        strongswan.encr_keyword(4, 0)


def test_identities() -> None:
    assert strongswan.identity(IdType.IP4_ADDR, "198.51.100.7") == "198.51.100.7"
    assert strongswan.identity(IdType.FQDN, "gw.example") == "fqdn:gw.example"
    assert strongswan.identity(IdType.RFC822, "a@b.example") == "rfc822:a@b.example"
    assert strongswan.identity(strongswan.IP6_ADDR, "2001:db8::1") == "2001:db8::1"
    with pytest.raises(strongswan.NoKeyword):
        strongswan.identity(11, "key-id")  # ID_KEY_ID: not a type the agent or lab uses
    assert [t.label for t in IdType] == ["ip4-addr", "fqdn", "rfc822"]
