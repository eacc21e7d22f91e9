"""Secrets in VPP CLI output and commands are masked; everything else is untouched."""

from __future__ import annotations

from agent.admin.masking import mask_cli_command, mask_cli_output

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
