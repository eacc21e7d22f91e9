"""A string wrapper that cannot leak through repr, str, f-strings or logs."""

from __future__ import annotations

from typing import Any


class Secret:
    """Holds a secret value; every textual rendering is masked.

    The value is only reachable through `reveal()`, so a secret reaching a log
    call, an exception message or a reply shows up as ``******``.
    """

    __slots__ = ("_value",)
    MASK = "******"

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({self.MASK})"

    def __str__(self) -> str:
        return self.MASK

    def __format__(self, spec: str) -> str:
        return self.MASK

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __len__(self) -> int:
        return len(self._value)

    def __reduce__(self) -> Any:  # pickling would bypass the mask; forbid it
        raise TypeError("Secret values are not picklable")
