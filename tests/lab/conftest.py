"""The lab tests' data plane: vppsim everywhere, real VPP 26.06 where it is installed."""

from __future__ import annotations

import pytest

from tests.real_vpp import require_real_vpp


@pytest.fixture(scope="module", params=["vppsim", "vpp"])
def backend(request: pytest.FixtureRequest) -> str:
    """Which data plane the module's lab runs: "vppsim" or "vpp" (real VPP 26.06)."""
    if request.param == "vpp":
        require_real_vpp()
    return str(request.param)
