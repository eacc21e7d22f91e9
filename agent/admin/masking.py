"""Masking of secrets in VPP CLI output and commands, before they leave the daemon.

VPP prints PSKs (`show ikev2 profile`: `auth data <psk>`) and key material
(`show ikev2 sa details`: `SK_d`, `SK_a/e/p  i:` lines and their `r:`
continuation lines, child SAs' `SK_e`/`SK_a`; `show ipsec sa ... insecure`:
`crypto alg X key <k>`). Masking is applied to every CLI output the admin
socket returns, whatever the command, unless the operator asked for secrets.
Nonces, SPIs and identities are not secret and stay visible.
"""

from __future__ import annotations

import re

MASK = "******"

_AUTH_DATA = re.compile(r"(\bauth data )\S.*$")
_SK_LINE = re.compile(r"^(\s*SK_[A-Za-z]+\s+(?:[ir]:)?)([0-9A-Fa-f]+)\s*$")
_SK_CONT = re.compile(r"^(\s*r:)([0-9A-Fa-f]+)\s*$")
_ALG_KEY = re.compile(r"(\b(?:crypto|integrity) alg \S+ key )(?!\[redacted\])(\S+)")
_LABELLED_KEY = re.compile(
    r"(\b(?:encr|integ|crypto|integrity|encryption)[ _-]key\s*[:=]?\s*)(?:0x)?[0-9A-Fa-f]{8,}")

# Secrets inside commands an operator may send through `peerctl vpp ...`.
_CMD_AUTH = re.compile(r"(\bauth\s+\S+\s+(?:string|hex)\s+)\S+")
_CMD_KEY = re.compile(r"(\b(?:crypto-key|integ-key|integrity-key)\s+)\S+")


def mask_cli_output(text: str) -> str:
    """`text` with PSKs and keys replaced by ******; everything else unchanged."""
    out: list[str] = []
    after_sk = False
    for line in text.split("\n"):
        m = _SK_LINE.match(line)
        if m:
            line = m.group(1) + MASK
            after_sk = "i:" in m.group(1)
        elif after_sk and (c := _SK_CONT.match(line)):
            line = c.group(1) + MASK
            after_sk = False
        else:
            after_sk = False
            line = _AUTH_DATA.sub(lambda m: m.group(1) + MASK, line)
            line = _ALG_KEY.sub(lambda m: m.group(1) + MASK, line)
            line = _LABELLED_KEY.sub(lambda m: m.group(1) + MASK, line)
        out.append(line)
    return "\n".join(out)


def mask_cli_command(cmd: str) -> str:
    """A CLI command safe to log: PSKs and keys typed into it are masked."""
    cmd = _CMD_AUTH.sub(lambda m: m.group(1) + MASK, cmd)
    return _CMD_KEY.sub(lambda m: m.group(1) + MASK, cmd)
