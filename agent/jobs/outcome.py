"""The outcome of one controller job, as the link journals and replies it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Outcome:
    """The result of one job as the controller will see it.

    `message` is shown to the administrator: on failure it says what was wrong
    and with which value, and it never contains a secret (PSK, token).
    It must be JSON-serialisable (usually a string).
    """

    ok: bool
    message: Any = "success"
