"""The agent's expected message table is VPP 26.06's, and mismatches are named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.vpp.errors import VppApiError, vnet_error_name
from agent.vpp.messages import OPTIONAL, REQUIRED, check_table

API_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "vpp-api" / "v26.06"


def _vpp_crcs() -> dict[str, str]:
    crcs: dict[str, str] = {}
    for f in API_DIR.glob("*.api.json"):
        for m in json.loads(f.read_text()).get("messages", []):
            crcs[m[0]] = next(x["crc"] for x in m if isinstance(x, dict) and "crc" in x)
    return crcs


@pytest.mark.skipif(not API_DIR.is_dir(),
    reason=f"reference tier: {API_DIR} absent (needs ../shared)")
def test_required_crcs_match_vpp_26_06() -> None:
    crcs = _vpp_crcs()
    wrong = {n: (crc, crcs.get(n)) for n, (crc, _) in REQUIRED.items() if crcs.get(n) != crc}
    assert wrong == {}
    for name, (crc, _) in OPTIONAL.items():
        if crc is not None:
            assert crcs.get(name) == crc


def test_check_table_names_missing_and_mismatched_messages() -> None:
    table = {f"{n}_{crc[2:]}": i for i, (n, (crc, _)) in enumerate(REQUIRED.items(), 1)}
    assert check_table(table).ok
    del table["ikev2_initiate_sa_init_ebf79a66"]
    table["ikev2_profile_set_id_deadbeef"] = table.pop("ikev2_profile_set_id_4d7e2418")
    table["ikev2_set_pfs_12345678"] = 999
    result = check_table(table)
    assert result.missing == {
        "ikev2_initiate_sa_init": "ikev2_initiate_sa_init missing: is ikev2_plugin.so enabled?",
        "ikev2_profile_set_id": "ikev2_profile_set_id has CRC 0xdeadbeef, the agent expects "
                                "0x4d7e2418 (VPP 26.06): version mismatch",
    }
    assert result.optional_present == frozenset({"ikev2_set_pfs"})


@pytest.mark.parametrize(("retval", "name"), [
    (-11, "SYSCALL_ERROR_1"),  # lcp pair without /dev/vhost-net
    (-73, "INVALID_ARGUMENT"),  # lcp pair on a tunnel with a TAP host side
    (-105, "ADDRESS_IN_USE"),  # an address added twice
    (-147, "INSTANCE_IN_USE"),  # ipip_add_tunnel with a taken instance
    (-2, "INVALID_SW_IF_INDEX"),
    (-6, "NO_SUCH_ENTRY"),
])
def test_vpp_errors_the_agent_meets_have_vpp_26_06_names(retval: int, name: str) -> None:
    assert vnet_error_name(retval) == name
    assert str(VppApiError("ipip_add_tunnel", retval)) == \
        f"ipip_add_tunnel failed: {name} ({retval})"
    assert vnet_error_name(-9999) == "error -9999"
