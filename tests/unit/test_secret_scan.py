"""The suite-wide secret scan in tests/conftest.py really fails a leaking test."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"


@pytest.mark.prints_secrets  # the inner run's report shows the leaked lines
def test_a_printed_or_logged_secret_fails_the_test(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makepyfile(
        test_leaks="""
        import logging, sys
        import pytest

        def test_prints():
            print("psk is S3cr3tPSK")

        def test_logs():
            logging.getLogger("x").warning("token device-token-e2e-never-logged")

        def test_clean():
            print("psk is ******")

        @pytest.mark.prints_secrets
        def test_allowed():
            print("S3cr3tPSK")
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines(["*secret(s) 'S3cr...' appeared in the output*"])
