"""Masking of secrets in VPP CLI output, commands and configuration, before they leave.

Shared by the admin socket (`peerctl`) and the controller's Command/Logs/
Configuration tabs (`agent.remote`), so both mask exactly alike.

VPP prints PSKs (`show ikev2 profile`: `auth data <psk>`, or `auth data 0x<hex>`)
and key material (`show ikev2 sa details`: `SK_d`, `SK_a/e/p  i:` lines and their
`r:` continuation lines, child SAs' `SK_e`/`SK_a`; `show ipsec sa ... insecure`:
`crypto alg X key <k>`); FRR prints `password`/`authentication-key`/`md5` keys.
VPP's format_hex_bytes prints more than 32 bytes as a dump over several lines,
`00000000: <32 bytes>` then, one per further 32 bytes, a line indented to the
column where the dump started, `00000020: ...`. SK_e of AES-256-GCM (36 bytes),
SK_d/SK_p/SK_a with SHA-384/512 and long hex PSKs look like that. Every line of
such a block is masked, the label kept.
Nonces, SPIs and identities are not secret and stay visible.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

MASK = "******"

_AUTH_DATA = re.compile(r"(\bauth data )\S.*$")
# `SK_x  i:<hex>`, `SK_d    <hex>`, either form possibly starting a dump (`00000000: <hex>`).
_SK_LINE = re.compile(r"^(\s*SK_[A-Za-z]+\s*(?:[ir]:)?)(.*)$")
_R_LINE = re.compile(r"^(\s*r:)(.*)$")
# A further line of a format_hex_bytes dump: indentation, 8-digit offset, hex.
_DUMP_CONT = re.compile(r"^(\s*)[0-9A-Fa-f]{8}:\s*[0-9A-Fa-f]*\s*$")
# `show ipsec sa N insecure`: the key runs to the end of the line (a dump when long).
_ALG_KEY = re.compile(r"(\b(?:crypto|integrity) alg \S+ key )(?!\[redacted\])(\S.*)$")
_LABELLED_KEY = re.compile(
    r"(\b(?:encr|integ|crypto|integrity|encryption)[ _-]key\s*[:=]?\s*)(?:0x)?[0-9A-Fa-f]{8,}")
# FRR (`vtysh -c 'show running-config'`): BGP neighbor passwords, OSPF and IS-IS keys,
# key chains.
_FRR_SECRET = re.compile(
    r"(\b(?:(?:password|authentication-key)\s+(?:(?:md5|clear)\s+)?|md5\s+|key-string\s+))"
    r"(?!\*{6})\S+")

# Secrets inside commands an operator may send through `peerctl vpp ...`.
_CMD_AUTH = re.compile(r"(\bauth\s+\S+\s+(?:string|hex)\s+)\S+")
_CMD_KEY = re.compile(r"(\b(?:crypto-key|integ-key|integrity-key)\s+)\S+")

# Keys of configuration messages whose values are secrets (flexiManage spells
# the PSK `psk`; tokens, passwords and keys of other messages alike).
_SECRET_KEY = re.compile(r"(psk|secret|passw|passphrase|token|(^|[-_])key$|private)", re.I)


def mask_cli_output(text: str) -> str:
    """`text` with PSKs and keys replaced by ******; everything else unchanged."""
    out: list[str] = []
    # "sk": inside an SK_ block (its r: line and dump lines are secret);
    # "dump": after a masked auth data line (only dump lines follow).
    block: str | None = None
    for line in text.split("\n"):
        if m := _SK_LINE.match(line):
            line = m.group(1) + MASK
            block = "sk"
        elif block == "sk" and (r := _R_LINE.match(line)):
            line = r.group(1) + MASK
        elif block is not None and (c := _DUMP_CONT.match(line)):
            line = c.group(1) + MASK
        else:
            block = None
            masked = _AUTH_DATA.sub(lambda m: m.group(1) + MASK, line)
            masked = _ALG_KEY.sub(lambda m: m.group(1) + MASK, masked)
            if masked != line:
                block = "dump"  # a long PSK or key continues on dump rows
            line = _LABELLED_KEY.sub(lambda m: m.group(1) + MASK, masked)
            line = _FRR_SECRET.sub(lambda m: m.group(1) + MASK, line)
        out.append(line)
    return "\n".join(out)


def mask_known(text: str, secrets: Iterable[str]) -> str:
    """`text` with each given secret value (and its hex spelling) replaced by ******.

    A second line of defence for output whose layout nobody parsed (journal
    lines, other tools): the agent knows its PSKs and removes them verbatim.
    """
    lowered = text.lower()  # presence tests first: a C scan is cheap, rewriting is not
    for s in sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True):
        if s in text:
            text = text.replace(s, MASK)
        hexed = s.encode().hex()
        if hexed in lowered:
            text = re.sub(re.escape(hexed), MASK, text, flags=re.I)
    return text


def mask_cli_command(cmd: str) -> str:
    """A CLI command safe to log: PSKs and keys typed into it are masked."""
    cmd = _CMD_AUTH.sub(lambda m: m.group(1) + MASK, cmd)
    return _CMD_KEY.sub(lambda m: m.group(1) + MASK, cmd)


def mask_params(value: Any) -> Any:
    """A deep copy of configuration params with every secret-named value masked."""
    if isinstance(value, Mapping):
        return {k: (MASK if isinstance(k, str) and _SECRET_KEY.search(k)
                    and value[k] not in (None, "") else mask_params(value[k]))
                for k in value}
    if isinstance(value, list | tuple):
        return [mask_params(v) for v in value]
    return value
