"""Real VPP 26.06 from ../shared/vpp for tests: unpacked once per session, run in a
network namespace on 4K pages (see ../shared/vpp/README.md)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
TARBALL = SHARED / "vpp" / "vpp-26.06-x86_64.tar.gz"


def unavailable() -> str | None:
    """Why real VPP cannot run here, or None."""
    if not TARBALL.is_file():
        return f"reference tier: {TARBALL} absent (needs ../shared)"
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return "real VPP runs in a network namespace: needs root and iproute2"
    return None


def unpack(base: Path) -> Path:
    """The VPP tree (bin/vpp, lib/...) unpacked under `base`."""
    with tarfile.open(TARBALL) as t:
        t.extractall(base, filter="tar")
    return next(p.parent.parent for p in base.rglob("bin/vpp"))


@contextlib.contextmanager
def running(tree: Path, ns: str, run: Path, plugins: tuple[str, ...],
            setup_cli: str = "", prefix: str = "") -> Iterator[Path]:
    """VPP in namespace `ns` (which must exist); yields its API socket path."""
    enable = " ".join(f"plugin {p}_plugin.so {{ enable }}" for p in plugins)
    startup = f"startup-config {run}/setup.cli" if setup_cli else ""
    (run / "setup.cli").write_text(setup_cli)
    (run / "startup.conf").write_text(f"""
unix {{ nodaemon log {run}/vpp.log cli-listen {run}/cli.sock poll-sleep-usec 100 {startup} }}
api-segment {{ prefix {prefix or ns} }}
socksvr {{ socket-name {run}/api.sock }}
statseg {{ socket-name {run}/stats.sock size 32m page-size 4k }}
memory {{ main-heap-size 256M main-heap-page-size 4k }}
buffers {{ buffers-per-numa 8192 page-size 4k }}
plugins {{ plugin default {{ disable }} {enable} }}
""")
    out = (run / "vpp.out").open("wb")
    proc = subprocess.Popen(["ip", "netns", "exec", ns, str(tree / "bin/vpp"), "-c",
                             str(run / "startup.conf")], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while not (run / "api.sock").exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"VPP did not start: {(run / 'vpp.out').read_text()[-2000:]}")
            time.sleep(0.05)
        yield run / "api.sock"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        out.close()
