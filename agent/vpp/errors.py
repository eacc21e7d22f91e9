"""Errors raised by the VPP layer, worded for the operator who reads them."""

from __future__ import annotations

# VNET_API_ERROR codes of VPP 26.06 (src/vnet/error.h, foreach_vnet_error, at tag v26.06):
# the whole list, so every retval a reply can carry has its name (e.g. -11 is what
# linux-cp returns without /dev/vhost-net, -147 an ipip instance already in use).
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
    -11: "SYSCALL_ERROR_1",
    -12: "SYSCALL_ERROR_2",
    -13: "SYSCALL_ERROR_3",
    -14: "SYSCALL_ERROR_4",
    -15: "SYSCALL_ERROR_5",
    -16: "SYSCALL_ERROR_6",
    -17: "SYSCALL_ERROR_7",
    -18: "SYSCALL_ERROR_8",
    -19: "SYSCALL_ERROR_9",
    -20: "SYSCALL_ERROR_10",
    -30: "FEATURE_DISABLED",
    -31: "INVALID_REGISTRATION",
    -50: "NEXT_HOP_NOT_IN_FIB",
    -51: "UNKNOWN_DESTINATION",
    -52: "NO_PATHS_IN_ROUTE",
    -53: "NEXT_HOP_NOT_FOUND_MP",
    -54: "NO_MATCHING_INTERFACE",
    -55: "INVALID_VLAN",
    -56: "VLAN_ALREADY_EXISTS",
    -57: "INVALID_SRC_ADDRESS",
    -58: "INVALID_DST_ADDRESS",
    -59: "ADDRESS_LENGTH_MISMATCH",
    -60: "ADDRESS_NOT_FOUND_FOR_INTERFACE",
    -61: "ADDRESS_NOT_DELETABLE",
    -62: "IP6_NOT_ENABLED",
    -63: "NO_SUCH_NODE",
    -64: "NO_SUCH_NODE2",
    -65: "NO_SUCH_TABLE",
    -66: "NO_SUCH_TABLE2",
    -67: "NO_SUCH_TABLE3",
    -68: "SUBIF_ALREADY_EXISTS",
    -69: "SUBIF_CREATE_FAILED",
    -70: "INVALID_MEMORY_SIZE",
    -71: "INVALID_INTERFACE",
    -72: "INVALID_VLAN_TAG_COUNT",
    -73: "INVALID_ARGUMENT",
    -74: "UNEXPECTED_INTF_STATE",
    -75: "TUNNEL_EXIST",
    -76: "INVALID_DECAP_NEXT",
    -77: "RESPONSE_NOT_READY",
    -78: "NOT_CONNECTED",
    -79: "IF_ALREADY_EXISTS",
    -80: "BOND_SLAVE_NOT_ALLOWED",
    -81: "VALUE_EXIST",
    -82: "SAME_SRC_DST",
    -83: "IP6_MULTICAST_ADDRESS_NOT_PRESENT",
    -84: "SR_POLICY_NAME_NOT_PRESENT",
    -85: "NOT_RUNNING_AS_ROOT",
    -86: "ALREADY_CONNECTED",
    -87: "UNSUPPORTED_JNI_VERSION",
    -88: "IP_PREFIX_INVALID",
    -89: "INVALID_WORKER",
    -90: "LISP_DISABLED",
    -91: "CLASSIFY_TABLE_NOT_FOUND",
    -92: "INVALID_EID_TYPE",
    -93: "CANNOT_CREATE_PCAP_FILE",
    -94: "INCORRECT_ADJACENCY_TYPE",
    -95: "EXCEEDED_NUMBER_OF_RANGES_CAPACITY",
    -96: "EXCEEDED_NUMBER_OF_PORTS_CAPACITY",
    -97: "INVALID_ADDRESS_FAMILY",
    -98: "INVALID_SUB_SW_IF_INDEX",
    -99: "TABLE_TOO_BIG",
    -100: "CANNOT_ENABLE_DISABLE_FEATURE",
    -101: "BFD_EEXIST",
    -102: "BFD_ENOENT",
    -103: "BFD_EINUSE",
    -104: "BFD_NOTSUPP",
    -105: "ADDRESS_IN_USE",
    -106: "ADDRESS_NOT_IN_USE",
    -107: "QUEUE_FULL",
    -108: "APP_UNSUPPORTED_CFG",
    -109: "URI_FIFO_CREATE_FAILED",
    -110: "LISP_RLOC_LOCAL",
    -111: "BFD_EAGAIN",
    -112: "INVALID_GPE_MODE",
    -113: "LISP_GPE_ENTRIES_PRESENT",
    -114: "ADDRESS_FOUND_FOR_INTERFACE",
    -115: "SESSION_CONNECT",
    -116: "ENTRY_ALREADY_EXISTS",
    -117: "SVM_SEGMENT_CREATE_FAIL",
    -118: "APPLICATION_NOT_ATTACHED",
    -119: "BD_ALREADY_EXISTS",
    -120: "BD_IN_USE",
    -121: "BD_NOT_MODIFIABLE",
    -122: "BD_ID_EXCEED_MAX",
    -123: "SUBIF_DOESNT_EXIST",
    -124: "L2_MACS_EVENT_CLINET_PRESENT",
    -125: "INVALID_QUEUE",
    -126: "UNSUPPORTED",
    -127: "DUPLICATE_IF_ADDRESS",
    -128: "APP_INVALID_NS",
    -129: "APP_WRONG_NS_SECRET",
    -130: "APP_CONNECT_SCOPE",
    -131: "APP_ALREADY_ATTACHED",
    -132: "SESSION_REDIRECT",
    -133: "ILLEGAL_NAME",
    -134: "NO_NAME_SERVERS",
    -135: "NAME_SERVER_NOT_FOUND",
    -136: "NAME_RESOLUTION_NOT_ENABLED",
    -137: "NAME_SERVER_FORMAT_ERROR",
    -138: "NAME_SERVER_NO_SUCH_NAME",
    -139: "NAME_SERVER_NO_ADDRESSES",
    -140: "NAME_SERVER_NEXT_SERVER",
    -141: "APP_CONNECT_FILTERED",
    -142: "ACL_IN_USE_INBOUND",
    -143: "ACL_IN_USE_OUTBOUND",
    -144: "INIT_FAILED",
    -145: "NETLINK_ERROR",
    -146: "BIER_BSL_UNSUP",
    -147: "INSTANCE_IN_USE",
    -148: "INVALID_SESSION_ID",
    -149: "ACL_IN_USE_BY_LOOKUP_CONTEXT",
    -150: "INVALID_VALUE_3",
    -151: "NON_ETHERNET",
    -152: "BD_ALREADY_HAS_BVI",
    -153: "INVALID_PROTOCOL",
    -154: "INVALID_ALGORITHM",
    -155: "RSRC_IN_USE",
    -156: "KEY_LENGTH",
    -157: "FIB_PATH_UNSUPPORTED_NH_PROTO",
    -159: "API_ENDIAN_FAILED",
    -160: "NO_CHANGE",
    -161: "MISSING_CERT_KEY",
    -162: "LIMIT_EXCEEDED",
    -163: "IKE_NO_PORT",
    -164: "UDP_PORT_TAKEN",
    -165: "EAGAIN",
    -166: "INVALID_VALUE_4",
    -167: "BUSY",
    -168: "BUG",
    -169: "FEATURE_ALREADY_DISABLED",
    -170: "FEATURE_ALREADY_ENABLED",
    -171: "INVALID_PREFIX_LENGTH",
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
