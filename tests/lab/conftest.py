"""The lab tests' data plane: vppsim everywhere, real VPP 26.06 where it is installed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agent.lab.topology import Lab
from tests.real_vpp import require_real_vpp


@pytest.fixture(scope="module", params=["vppsim", "vpp"])
def backend(request: pytest.FixtureRequest) -> str:
    """Which data plane the module's lab runs: "vppsim" or "vpp" (real VPP 26.06)."""
    if request.param == "vpp":
        require_real_vpp()
    return str(request.param)


@pytest.fixture(scope="module")
def vpp_lab() -> Iterator[Lab]:
    """Real VPP behind a NAT (the kernel-libipsec peer only does ESP in UDP), one per
    module that asks for it."""
    require_real_vpp()
    with Lab(nat=True, vpp_wan=True) as lab:
        yield lab
