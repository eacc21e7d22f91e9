"""Errors raised by the VPP layer, worded for the operator who reads them."""

from __future__ import annotations

# VNET_API_ERROR codes (vnet/api_errno.h) the agent meets; the rest print as numbers.
VNET_ERRORS: dict[int, str] = {
    -1: "UNSPECIFIED",
    -2: "INVALID_SW_IF_INDEX",
    -3: "NO_SUCH_FIB",
    -4: "NO_SUCH_INNER_FIB",
    -5: "NO_SUCH_LABEL",
    -6: "NO_SUCH_ENTRY",
    -7: "INVALID_VALUE",
    -8: "INVALID_VALUE_2",
    -9: "UNIMPLEMENTED",
    -10: "INVALID_SW_IF_INDEX_2",
    -12: "INVALID_INTERFACE",
    -54: "NO_MATCHING_INTERFACE",
    -60: "ADDRESS_NOT_FOUND_FOR_INTERFACE",
    -68: "SUBIF_ALREADY_EXISTS",
    -75: "TUNNEL_EXIST",
    -79: "IF_ALREADY_EXISTS",
    -81: "VALUE_EXIST",
    -105: "ADDRESS_IN_USE",
    -165: "EAGAIN",
}


def vnet_error_name(retval: int) -> str:
    return VNET_ERRORS.get(retval, f"error {retval}")


class VppError(Exception):
    """Base of everything the VPP layer raises."""


class VppUnavailable(VppError):
    """VPP is not connected: the call was not sent."""


class VppTimeout(VppError):
    """No answer within the call's deadline."""

    def __init__(self, message: str, timeout: float) -> None:
        super().__init__(f"VPP did not answer {message} within {timeout:g} s")
        self.message = message
        self.timeout = timeout


class VppMissingMessage(VppError):
    """The connected VPP does not offer a message the agent needs."""


class VppApiError(VppError):
    """VPP answered with a negative retval."""

    def __init__(self, message: str, retval: int, reply: object = None) -> None:
        super().__init__(f"{message} failed: {vnet_error_name(retval)} ({retval})")
        self.message = message
        self.retval = retval
        self.reply = reply
