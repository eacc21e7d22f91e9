"""VPP 26.06's CLI as operators type it (pure): old spellings, and a form that crashes it.

The runbooks the operators inherited say `ikev2 set logging level 5`,
`event-logger clear` and `show event-logger`. Before v26.06 the IKEv2 plugin lost
its own log level and stopped writing to the event logger: it logs through vlib's
log classes (`set logging class ikev2 level ...`, `show logging`, `clear logging`).
peerctl and the controller's Command tab accept the old spellings, run the 26.06
equivalent and say so.

`show ikev2 sa details` dereferences each SA's profile; the half-open SA that any
incoming IKE_SA_INIT leaves has none (index ~0), and VPP dies (SIGSEGV). The plain
listing reads only addresses and SPIs and is safe (both checked on real VPP 26.06).
"""

from __future__ import annotations

# The old plugin's levels (0 none, 1 error, 2 warning, 3 info, 4 debug, 5 detail)
# as vlib log levels; 26.06's plugin logs only at error, warn and debug.
IKE_LEVELS = ("disabled", "error", "warn", "info", "debug", "debug")


def translate_cli(cmd: str) -> tuple[str, str | None]:
    """(the command to run, a note for the operator when it was translated)."""
    words = cmd.split()
    new: str | None = None
    if words[:4] == ["ikev2", "set", "logging", "level"] and len(words) == 5 \
            and words[4].isdigit() and int(words[4]) < len(IKE_LEVELS):
        new = f"set logging class ikev2 level {IKE_LEVELS[int(words[4])]}"
    elif words == ["event-logger", "clear"]:
        new = "clear logging"
    elif words[:2] == ["show", "event-logger"]:
        new = "show logging"
    if new is None:
        return cmd, None
    return new, (f"note: VPP 26.06 has no '{' '.join(words)}' for IKEv2 (IKEv2 logs through "
                 f"VPP's logging classes); ran '{new}' instead")


def _abbreviates(word: str, keyword: str) -> bool:
    return bool(word) and keyword.startswith(word.lower())


def shows_sa_details(cmd: str) -> bool:
    """Whether VPP would run `cmd` as `show ikev2 sa ... details`: VPP takes unique
    prefixes of command words (`sh ike sa`), and its argument parser takes any word
    that starts with `details`. Ambiguous prefixes count too (refusing is the safe
    side)."""
    words = cmd.split()
    return (len(words) > 3
            and all(_abbreviates(w, k) for w, k in zip(words, ("show", "ikev2", "sa"),
                                                         strict=False))
            and any(w.lower().startswith("details") for w in words[3:]))
