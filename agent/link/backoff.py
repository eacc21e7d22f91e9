"""Reconnect delays: capped exponential backoff with full jitter (pure)."""

from __future__ import annotations

import random


class Backoff:
    """Delay before attempt n is uniform in [0, min(maximum, minimum * 2**n)].

    Full jitter spreads a fleet of devices reconnecting after a controller
    restart instead of having them all knock at the same instants.
    """

    def __init__(self, minimum: float, maximum: float, rng: random.Random | None = None) -> None:
        if not 0 < minimum <= maximum:
            raise ValueError("backoff needs 0 < minimum <= maximum")
        self.minimum = minimum
        self.maximum = maximum
        self.attempt = 0
        self._rng = rng or random.Random()

    def bound(self) -> float:
        """The upper bound of the next delay."""
        return min(self.maximum, self.minimum * 2 ** min(self.attempt, 62))

    def next_delay(self) -> float:
        delay = self._rng.uniform(0, self.bound())
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0
