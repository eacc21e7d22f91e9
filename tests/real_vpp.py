"""The real-VPP tier's one gate: every test that needs VPP 26.06 skips from here, so
`pytest -rs` folds them into one line that says how to enable the tier."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.lab.realvpp import vpp_unavailable

REAL_VPP_REASON = vpp_unavailable()


def require_real_vpp() -> None:
    if REAL_VPP_REASON is not None:
        pytest.skip(f"real-VPP tier: {REAL_VPP_REASON}")


def fold_skip(report: pytest.TestReport) -> None:
    """Report every real-VPP-tier skip at this module's gate, whatever test or fixture
    raised it: `pytest -rs` then shows the tier's absence as one line."""
    longrepr = report.longrepr
    if report.skipped and isinstance(longrepr, tuple) and len(longrepr) == 3 \
            and str(longrepr[2]).startswith("Skipped: real-VPP tier:"):
        report.longrepr = (__file__, _GATE_LINE, longrepr[2])


# where require_real_vpp skips (as pytest numbers lines in -rs)
_GATE_LINE = next(i for i, line in enumerate(Path(__file__).read_text().splitlines(), 1)
                  if line.strip().startswith("pytest.skip("))
