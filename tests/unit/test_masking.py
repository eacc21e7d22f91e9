"""Secrets in VPP CLI output and commands are masked; everything else is untouched."""

from __future__ import annotations

from agent.masking import mask_cli_command, mask_cli_output

PROFILE = """profile peer-7
  auth-method shared-key-mic auth data S3cr3tPSK-test-0123456789
  local id-type ip4-addr data 198.51.100.7
  remote id-type fqdn data gw.cloud.example
  protected tunnel ipip0
  responder GigabitEthernet0/3/0 203.0.113.10<SP>
  ike-crypto-alg aes-cbc 256 ike-integ-alg hmac-sha2-256-128 ike-dh modp-2048
  lifetime 3600 jitter 0 handover 0 maxdata 0
"""

PROFILE_MASKED = """profile peer-7
  auth-method shared-key-mic auth data ******
  local id-type ip4-addr data 198.51.100.7
  remote id-type fqdn data gw.cloud.example
  protected tunnel ipip0
  responder GigabitEthernet0/3/0 203.0.113.10<SP>
  ike-crypto-alg aes-cbc 256 ike-integ-alg hmac-sha2-256-128 ike-dh modp-2048
  lifetime 3600 jitter 0 handover 0 maxdata 0
"""

# VPP's own layout (vppsim's cli.py mirrors ikev2_cli.c), trailing spaces included.
SA = """iip 192.168.1.10 ispi 1122334455667788 rip 203.0.113.10 rspi 99aabbccddeeff01
 encr:aes-cbc-256 prf:hmac-sha2-256 integ:hmac-sha2-256-128 dh-group:modp-2048
 profile: peer-7
 state: AUTHENTICATED
 uptime: 12.500000 (s)

 nonce i:00112233445566778899aabbccddeeff
       r:ffeeddccbbaa99887766554433221100
 SK_d    0a0b0c0d0e0f
 SK_a  i:1a1b1c1d
       r:2a2b2c2d
 SK_e  i:3a3b3c3d
       r:4a4b4c4d
 SK_p  i:5a5b5c5d
       r:6a6b6c6d
 identifier (i) id-type ip4-addr data 198.51.100.7
 identifier (r) id-type fqdn data gw.cloud.example
   child sa 0:
    uptime: 12.400000 (s)
    encr:aes-cbc-256 integ:hmac-sha2-256-128 esn:no<SP>
    spi(i) c0ffee01 spi(r) c0ffee02
    SK_e  i:7a7b7c7d
          r:8a8b8c8d
    SK_a  i:9a9b9c9d
          r:aaabacad
    traffic selectors (i):0 type 7 protocol_id 0 addr 0.0.0.0 - 255.255.255.255 port 0 - 65535
    traffic selectors (r):0 type 7 protocol_id 0 addr 0.0.0.0 - 255.255.255.255 port 0 - 65535
Stats:
 keepalives :0
 rekey :0
"""

SA_MASKED = """iip 192.168.1.10 ispi 1122334455667788 rip 203.0.113.10 rspi 99aabbccddeeff01
 encr:aes-cbc-256 prf:hmac-sha2-256 integ:hmac-sha2-256-128 dh-group:modp-2048
 profile: peer-7
 state: AUTHENTICATED
 uptime: 12.500000 (s)

 nonce i:00112233445566778899aabbccddeeff
       r:ffeeddccbbaa99887766554433221100
 SK_d    ******
 SK_a  i:******
       r:******
 SK_e  i:******
       r:******
 SK_p  i:******
       r:******
 identifier (i) id-type ip4-addr data 198.51.100.7
 identifier (r) id-type fqdn data gw.cloud.example
   child sa 0:
    uptime: 12.400000 (s)
    encr:aes-cbc-256 integ:hmac-sha2-256-128 esn:no<SP>
    spi(i) c0ffee01 spi(r) c0ffee02
    SK_e  i:******
          r:******
    SK_a  i:******
          r:******
    traffic selectors (i):0 type 7 protocol_id 0 addr 0.0.0.0 - 255.255.255.255 port 0 - 65535
    traffic selectors (r):0 type 7 protocol_id 0 addr 0.0.0.0 - 255.255.255.255 port 0 - 65535
Stats:
 keepalives :0
 rekey :0
"""
PROFILE, PROFILE_MASKED, SA, SA_MASKED = (
    t.replace("<SP>", " ") for t in (PROFILE, PROFILE_MASKED, SA, SA_MASKED))


def test_profile_psk_is_masked_and_nothing_else_changes() -> None:
    assert mask_cli_output(PROFILE) == PROFILE_MASKED


def test_hex_psk_is_masked() -> None:
    line = "  auth-method shared-key-mic auth data 0x5333637233745053"
    assert mask_cli_output(line) == "  auth-method shared-key-mic auth data ******"


def test_sa_details_keys_are_masked_nonces_and_spis_stay() -> None:
    assert mask_cli_output(SA) == SA_MASKED


def test_sa_summary_line_is_unchanged() -> None:
    line = "iip 192.168.1.10 ispi 1122334455667788 rip 203.0.113.10 rspi 99aabbccddeeff01\n"
    assert mask_cli_output(line) == line


def test_ipsec_sa_keys_are_masked_unless_already_redacted() -> None:
    text = ("   crypto alg aes-cbc-256 key 0x00112233445566778899aabbccddeeff\n"
            "   integrity alg sha-256-128 key [redacted]\n"
            "   encr key: 00112233445566778899\n")
    assert mask_cli_output(text) == (
        "   crypto alg aes-cbc-256 key ******\n"
        "   integrity alg sha-256-128 key [redacted]\n"
        "   encr key: ******\n")


def test_r_line_after_a_nonce_is_not_masked() -> None:
    text = " nonce i:aa\n       r:bb\n"
    assert mask_cli_output(text) == text


def test_commands_with_secrets_are_masked_for_the_log() -> None:
    assert mask_cli_command("ikev2 profile set p auth shared-key-mic string Secr3t!") == \
        "ikev2 profile set p auth shared-key-mic string ******"
    assert mask_cli_command("ikev2 profile set p auth shared-key-mic hex 0a0b") == \
        "ikev2 profile set p auth shared-key-mic hex ******"
    assert mask_cli_command("ipsec sa add 10 spi 1 esp crypto-key 0a0b integ-key 0c0d") == \
        "ipsec sa add 10 spi 1 esp crypto-key ****** integ-key ******"
    assert mask_cli_command("show ikev2 sa details") == "show ikev2 sa details"


# --- VPP's long form: keys over 32 bytes as a multi-line format_hex_bytes dump -----

def _sa_text(ike: dict[str, int], esp: tuple[int, int, int]) -> tuple[str, list[bytes]]:
    """`show ikev2 sa details` as vppsim prints it (VPP's layout), and every key in it."""
    from ipaddress import IPv4Address

    from agent.lab.vppsim.cli import Cli
    from agent.lab.vppsim.state import ChildSa, IkeSa, SimState, ike_sa_keys

    state = SimState([("GigabitEthernet0/3/0", "192.168.1.10/24")], clock=lambda: 100.0)
    sa = IkeSa(index=0, profile="peer-7", state=2, ispi=0x1122, rspi=0x3344,
               iaddr=IPv4Address("192.168.1.10"), raddr=IPv4Address("203.0.113.10"),
               i_id=(1, bytes([198, 51, 100, 7])), r_id=(2, b"gw.cloud.example"),
               ike=ike, created=1.0, auth_time=2.0, keys=ike_sa_keys(ike),
               nonces=(bytes(range(32)), bytes(range(32, 64))))
    alg, bits, integ = esp
    key_len = bits // 8  # VPP keeps a child's GCM salt apart from SK_e
    import secrets
    child = ChildSa(index=0, i_spi=0xC0FFEE01, r_spi=0xC0FFEE02, encr=(alg, bits), integ=integ,
                    created=3.0, tsi=None, tsr=None,
                    keys={"sk_ei": secrets.token_bytes(key_len),
                          "sk_er": secrets.token_bytes(key_len),
                          "sk_ai": secrets.token_bytes(48 if integ == 13 else 0),
                          "sk_ar": secrets.token_bytes(48 if integ == 13 else 0)})
    sa.children.append(child)
    state.sas[0] = sa
    text = Cli(state).show_ikev2_sa(details=True)
    keys = [k for k in (*sa.keys.values(), *child.keys.values()) if k]
    return text, keys


def _surviving(masked: str, keys: list[bytes]) -> list[str]:
    """Any 4 consecutive key bytes still readable (as hex) anywhere in the output."""
    flat = masked.replace("\n", "").replace(" ", "").lower()
    found = []
    for key in keys:
        hexed = key.hex()
        for i in range(0, len(hexed) - 7, 2):
            if hexed[i:i + 8] in flat:
                found.append(hexed[i:i + 8])
    return found


GCM_SHA512 = {"crypto_alg": 20, "crypto_key_size": 256, "integ_alg": 0, "dh_group": 21,
              "prf_alg": 7}
CBC_SHA384 = {"crypto_alg": 12, "crypto_key_size": 256, "integ_alg": 13, "dh_group": 20,
              "prf_alg": 6}


def test_vppsim_prints_long_keys_as_vpp_does() -> None:
    """format_hex_bytes: `00000000: ` then 32 bytes, continuation at the dump's column."""
    text, _ = _sa_text(GCM_SHA512, (20, 256, 0))
    lines = text.split("\n")
    sk_d = next(i for i, ln in enumerate(lines) if ln.startswith(" SK_d"))
    assert lines[sk_d].startswith(" SK_d    00000000: ")
    assert len(lines[sk_d]) == len(" SK_d    00000000: ") + 64
    assert lines[sk_d + 1].startswith(" " * 9 + "00000020: ")  # 64-byte SK_d: two rows
    sk_e = next(i for i, ln in enumerate(lines) if ln.startswith(" SK_e  i:"))
    assert lines[sk_e].startswith(" SK_e  i:00000000: ")  # 36 bytes of AES-256-GCM
    assert lines[sk_e + 1].startswith(" " * 9 + "00000020: ") and len(lines[sk_e + 1]) == 9 + 18
    assert lines[sk_e + 2].startswith("       r:00000000: ")
    text, _ = _sa_text(CBC_SHA384, (12, 256, 13))
    lines = text.split("\n")
    child_a = next(i for i, ln in enumerate(lines) if ln.startswith("    SK_a  i:"))
    assert lines[child_a].startswith("    SK_a  i:00000000: ")  # 48-byte SHA-384 key
    assert lines[child_a + 1].startswith(" " * 12 + "00000020: ")
    assert lines[child_a + 2].startswith("          r:00000000: ")


def test_no_key_byte_survives_in_long_layouts() -> None:
    for ike, esp in ((GCM_SHA512, (20, 256, 0)), (CBC_SHA384, (12, 256, 13)),
                     (GCM_SHA512, (20, 128, 0))):
        text, keys = _sa_text(ike, esp)
        assert _surviving(text, keys), "the check itself must see keys in the raw output"
        masked = mask_cli_output(text)
        assert _surviving(masked, keys) == []
        # and nothing but key material went: nonces, SPIs, identities stay
        assert bytes(range(32)).hex() in masked
        assert "rspi 3344" in masked and "spi(i) c0ffee01" in masked
        assert "identifier (r) id-type fqdn data gw.cloud.example" in masked


def test_dump_rows_are_masked_label_and_indent_kept() -> None:
    text = (" SK_d    00000000: " + "ab" * 32 + "\n"
            "         00000020: " + "cd" * 32 + "\n"
            " SK_e  i:00000000: " + "ef" * 32 + "\n"
            "         00000020: 01020304\n"
            "       r:00000000: " + "12" * 32 + "\n"
            "         00000020: 05060708\n"
            " identifier (i) id-type ip4-addr data 198.51.100.7\n")
    assert mask_cli_output(text) == (
        " SK_d    ******\n"
        "         ******\n"
        " SK_e  i:******\n"
        "         ******\n"
        "       r:******\n"
        "         ******\n"
        " identifier (i) id-type ip4-addr data 198.51.100.7\n")


def test_long_hex_psk_dump_is_masked_on_every_row() -> None:
    from agent.lab.vppsim.cli import hex_bytes
    psk = bytes(range(0x40, 0x40 + 70))
    head = "  auth-method shared-key-mic auth data 0x"
    text = head + hex_bytes(psk, len(head)) + "\n  local id-type fqdn data a.example\n"
    assert text.count("\n") == 4  # 70 bytes: three dump rows
    masked = mask_cli_output(text)
    assert _surviving(masked, [psk]) == []
    assert masked.endswith("  local id-type fqdn data a.example\n")


def test_known_secrets_are_removed_verbatim_and_as_hex() -> None:
    from agent.masking import mask_known
    text = "charon: psk Top-Secret-Key-4711 hex " + b"Top-Secret-Key-4711".hex().upper()
    assert mask_known(text, ["Top-Secret-Key-4711"]) == "charon: psk ****** hex ******"


def test_secret_named_params_are_masked_deeply() -> None:
    from agent.masking import MASK, mask_params
    params = {"tunnel-id": 7, "ikev2": {"psk": "S3cr3tPSK", "role": "initiator",
                                        "esp": {"key-size": 256}},
              "list": [{"token": "x"}], "empty": {"psk": ""}}
    assert mask_params(params) == {"tunnel-id": 7, "ikev2": {"psk": MASK, "role": "initiator",
                                                              "esp": {"key-size": 256}},
                                   "list": [{"token": MASK}], "empty": {"psk": ""}}


def test_frr_passwords_are_masked() -> None:
    text = (" neighbor 10.100.0.17 password Top-Secret-Key-4711\n"
            " ip ospf message-digest-key 1 md5 Top-Secret-Key-4711\n"
            " ip ospf authentication-key Top-Secret-Key-4711\n"
            " area-password md5 Top-Secret-Key-4711\n"
            "  key-string Top-Secret-Key-4711\n"
            " neighbor 10.100.0.17 remote-as 65001\n")
    assert mask_cli_output(text) == (" neighbor 10.100.0.17 password ******\n"
                                     " ip ospf message-digest-key 1 md5 ******\n"
                                     " ip ospf authentication-key ******\n"
                                     " area-password md5 ******\n"
                                     "  key-string ******\n"
                                     " neighbor 10.100.0.17 remote-as 65001\n")


# --- real VPP 26.06 output (tests/fixtures/vpp_26_06_*.txt) ------------------------
# Captured from the release build in ../shared/vpp: two VPPs in network namespaces,
# one initiating to the other (IKE aes-cbc-256 + hmac-sha2-512-256, then aes-gcm-16-256;
# ESP aes-gcm-16-256), and `show ikev2 profile` with a 70-byte hex PSK and a string PSK.

def _fixture(name: str) -> str:
    from tests.fixtures import FIXTURES
    return (FIXTURES / name).read_text()


def _key_hex_of(raw: str) -> list[str]:
    """Every key in VPP's output, read back independently of the masking code:
    the hex after an SK_ label or `r:` inside an SK block, joined across dump rows."""
    import re
    keys: list[str] = []
    in_sk = False
    for line in raw.split("\n"):
        m = re.match(r"^\s*(?:SK_\w+\s+(?:[ir]:)?|r:)(?:[0-9a-f]{8}: )?([0-9a-f]+)$", line)
        if m and ("SK_" in line or in_sk):
            keys.append(m.group(1))
            in_sk = True
            continue
        cont = re.match(r"^\s+[0-9a-f]{8}: ([0-9a-f]+)$", line)
        if cont and in_sk:
            keys[-1] += cont.group(1)
            continue
        in_sk = False
    return keys


def test_real_vpp_sa_details_lose_every_key_byte() -> None:
    for name, long_keys in (("vpp_26_06_sa_details_sha512.txt", 2),
                            ("vpp_26_06_sa_details_gcm.txt", 2)):
        raw = _fixture(name)
        keys = _key_hex_of(raw)
        assert len(keys) >= 7 and sum(len(k) > 64 for k in keys) == long_keys, name
        masked = mask_cli_output(raw)
        flat = masked.replace("\n", "").replace(" ", "")
        for k in keys:
            assert not any(k[i:i + 8] in flat for i in range(0, len(k) - 7, 2)), (name, k[:8])
        assert "nonce i:" in masked and "identifier (r) id-type ip4-addr data 192.0.2.2" in masked
        assert masked.count("\n") == raw.count("\n")


def test_real_vpp_profile_psks_are_masked() -> None:
    raw = _fixture("vpp_26_06_show_ikev2_profile.txt")
    masked = mask_cli_output(raw)
    assert "Top-Secret-Key-4711" in raw and "Top-Secret-Key-4711" not in masked
    psk_hex = bytes(range(0x41, 0x41 + 70)).hex()
    assert psk_hex[:64] in raw.replace("\n", "").replace(" ", "").replace(
        "00000020:", "").replace("00000040:", "")
    flat = masked.replace("\n", "").replace(" ", "")
    assert not any(psk_hex[i:i + 8] in flat for i in range(0, len(psk_hex) - 7, 2))


def test_vppsim_prints_the_profile_exactly_as_real_vpp() -> None:
    from agent.lab.vppsim.cli import Cli
    from agent.lab.vppsim.state import Profile, SimState

    state = SimState([], clock=lambda: 0.0)
    state.profiles["p1"] = Profile(0, "p1", auth_method=2, auth_hex=True,
                                   auth_data=bytes(range(0x41, 0x41 + 70)))
    state.profiles["p2"] = Profile(1, "p2", auth_method=2, auth_data=b"Top-Secret-Key-4711")
    assert Cli(state).show_ikev2_profile() == _fixture("vpp_26_06_show_ikev2_profile.txt")


def test_vppsim_key_layout_matches_real_vpp() -> None:
    """Same transforms, same key lengths: vppsim's key lines have real VPP's shape."""
    import re

    def key_block(text: str) -> list[str]:
        lines = text.split("\n")
        ike = lines[next(i for i, ln in enumerate(lines) if ln.startswith(" SK_d")):
                    next(i for i, ln in enumerate(lines) if ln.startswith(" identifier (i)"))]
        child = lines[next(i for i, ln in enumerate(lines) if ln.startswith("    SK_e")):
                      next(i for i, ln in enumerate(lines) if "traffic selectors (i)" in ln)]
        return [re.sub(r"[0-9a-f]", "x", ln) for ln in ike + child]

    assert "         00000020: " in _fixture("vpp_26_06_sa_details_sha512.txt")
    real = key_block(_fixture("vpp_26_06_sa_details_sha512.txt"))
    sim, _ = _sa_text({"crypto_alg": 12, "crypto_key_size": 256, "integ_alg": 14,
                       "dh_group": 19, "prf_alg": 5}, (20, 256, 0))
    assert key_block(sim) == real


def test_long_ipsec_sa_keys_are_masked_on_every_row() -> None:
    """`show ipsec sa N insecure` prints keys with format_hex_bytes too: a 64-byte
    SHA-512 integrity key is a two-row dump after `key `."""
    from agent.lab.vppsim.cli import hex_bytes
    key = bytes(range(150, 214))
    head = "   integrity alg sha-512-256 key "
    text = ("   crypto alg aes-gcm-256 key " + "ab" * 32 + "\n"
            + head + hex_bytes(key, len(head)) + "\n   UDP:[src:0 dst:0]\n")
    masked = mask_cli_output(text)
    assert masked == ("   crypto alg aes-gcm-256 key ******\n"
                      + head + "******\n" + " " * len(head) + "******\n"
                      "   UDP:[src:0 dst:0]\n")
