"""The lab tests' data plane: vppsim everywhere, real VPP 26.06 where it is installed."""

from __future__ import annotations

import pytest

from agent.lab.realvpp import vpp_unavailable

REAL_VPP_REASON = vpp_unavailable()


def require_real_vpp() -> None:
    """Skip (one reason, one place: -rs shows it as a single line) without real VPP."""
    if REAL_VPP_REASON is not None:
        pytest.skip(f"real-VPP tier: {REAL_VPP_REASON}")


@pytest.fixture(scope="module", params=["vppsim", "vpp"])
def backend(request: pytest.FixtureRequest) -> str:
    """Which data plane the module's lab runs: "vppsim" or "vpp" (real VPP 26.06)."""
    if request.param == "vpp":
        require_real_vpp()
    return str(request.param)
