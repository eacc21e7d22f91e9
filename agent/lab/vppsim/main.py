"""`vppsim` command: run the VPP API emulator until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import structlog

from agent.lab.vppsim.ike import OUTCOMES, IkeBackend, InProcessIke
from agent.lab.vppsim.server import VppSim


def _pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="vppsim", description="VPP 26.06 binary-API emulator")
    p.add_argument("--socket", required=True, type=Path, help="Unix socket path (api.sock)")
    p.add_argument(
        "--interface",
        action="append",
        type=_pair,
        default=[],
        metavar="NAME=ADDR/LEN",
        help="WAN interface, admin-up with that address (repeatable)",
    )
    p.add_argument(
        "--ike-outcome",
        action="append",
        type=_pair,
        default=[],
        metavar="PROFILE=OUTCOME",
        help=f"scripted IKE result per profile, one of {', '.join(OUTCOMES)}",
    )
    p.add_argument(
        "--ike",
        choices=("model", "strongswan"),
        default="model",
        help="IKE backend: the in-process model, or a charon of vppsim's own in this "
        "network namespace (real IKEv2/ESP; needs root and strongSwan)",
    )
    p.add_argument(
        "--ike-workdir",
        type=Path,
        help="private directory for the strongSwan backend's charon (default: a new /tmp dir)",
    )
    p.add_argument("--ike-default-outcome", default="UP", choices=OUTCOMES)
    p.add_argument("--ike-delay", type=float, default=0.01, help="seconds until an SA settles")
    p.add_argument("--omit-message", action="append", default=[], metavar="NAME")
    p.add_argument("--omit-plugin", action="append", default=[], metavar="PLUGIN")
    p.add_argument("--ready-file", type=Path, help="written once the socket accepts clients")
    p.add_argument("--log-level", default="info")
    return p.parse_args(argv)


def _backend(args: argparse.Namespace) -> IkeBackend:
    if args.ike == "strongswan":
        from agent.lab.vppsim.ike_strongswan import StrongswanIke, charon_available

        missing = charon_available()
        if missing:
            raise ValueError(f"--ike strongswan: {missing}")
        if args.ike_workdir is None:  # ours: removed again when vppsim stops
            args.ike_workdir = Path(tempfile.mkdtemp(prefix="vppsim-ike-", dir="/tmp"))
            args.ike_workdir_owned = True
        return StrongswanIke(args.ike_workdir)
    return InProcessIke(
        delay=args.ike_delay,
        default_outcome=args.ike_default_outcome,
        outcomes=dict(args.ike_outcome),
    )


async def run(args: argparse.Namespace) -> None:
    ike = _backend(args)
    sim = VppSim(
        args.socket,
        interfaces=list(args.interface),
        ike=ike,
        omit_messages=args.omit_message,
        omit_plugins=args.omit_plugin,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await sim.start()
    try:
        if args.ready_file:
            args.ready_file.write_text(f"{args.socket}\n")
        print(f"vppsim ready {args.socket}", flush=True)
        await stop.wait()
    finally:
        await sim.stop()
        if args.ready_file:
            args.ready_file.unlink(missing_ok=True)
        if getattr(args, "ike_workdir_owned", False):
            shutil.rmtree(args.ike_workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    level = logging.getLevelName(args.log_level.upper())
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(
            level if isinstance(level, int) else 20
        ),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    try:
        asyncio.run(run(args))
    except (ValueError, OSError) as e:  # bad --omit-*, --ike-outcome; charon failed
        print(f"vppsim: {e}", file=sys.stderr)
        return 2
    return 0
