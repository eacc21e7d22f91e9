"""`peering-agent`: the daemon and its admin subcommands."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from agent import __version__
from agent.config import AgentConfig, ConfigError, load_config
from agent.daemon.gctune import tune_gc
from agent.daemon.startup_conf import add_render_parser, render_startup_conf_cli
from agent.logsetup import configure_logging
from agent.secret import Secret
from agent.vpp.client import VppClient
from agent.vpp.errors import VppError
from agent.vpp.readers import VppSummary, read_summary


def _print_summary(s: VppSummary, socket: str) -> None:
    print(f"VPP at {socket}: version {s.version} (built {s.build_date})")
    print(f"ikev2 plugin: {s.ikev2_plugin or 'absent'}; profiles {s.profiles}, IKE SAs {s.sas}")
    print("interfaces:")
    width = max((len(i.name) for i, _ in s.interfaces), default=4)
    for info, addrs in s.interfaces:
        state = "up" if info.admin_up else "down"
        print(f"  {info.sw_if_index:>3} {info.name:<{width}} {state:<4} mtu {info.mtu:<5} "
              f"{' '.join(addrs) or '-'}")
    if s.missing:
        print("missing messages the agent needs:")
        for problem in s.missing.values():
            print(f"  {problem}")
    else:
        print("all messages the agent needs are present")
    print(f"optional capabilities: {', '.join(s.optional_present) or 'none (stock VPP)'}")


async def _vpp_info(socket: str, timeout: float, as_json: bool) -> int:
    client = VppClient(socket, connect_timeout=timeout, call_timeout=timeout)
    await client.start()
    try:
        await client.wait_connected(timeout)
        summary = await read_summary(client)
    except VppError as e:
        print(f"peering-agent: {e}", file=sys.stderr)
        return 1
    finally:
        await client.close()
    if as_json:
        print(json.dumps(asdict(summary), indent=2, default=str))
    else:
        _print_summary(summary, socket)
    return 0 if not summary.missing else 2


DEFAULT_CONFIG = Path("/etc/peering-agent/agent.toml")


def _load(path: Path) -> AgentConfig:
    try:
        return load_config(path, os.environ)
    except ConfigError as e:
        for problem in e.problems:
            print(f"peering-agent: {path}: {problem}", file=sys.stderr)
        raise SystemExit(2) from None
    except OSError as e:
        print(f"peering-agent: cannot read {path}: {e.strerror}", file=sys.stderr)
        raise SystemExit(2) from None


async def _run(cfg: AgentConfig) -> int:
    from agent.app import Agent, run_until_signalled
    from agent.daemon.metrics import (
        AgentMetricsSource,
        JobMetrics,
        metrics_registry,
        run_metrics_server,
    )
    from agent.daemon.systemd import (
        Notifier,
        start_keepalive,
        watchdog_interval,
        watchdog_loop,
    )

    notifier = Notifier.from_env()
    jobs = JobMetrics()
    agent = Agent(cfg, job_metrics=jobs.observe)
    agent.extra_tasks.append(lambda: watchdog_loop(notifier, watchdog_interval()))

    def waiting_for() -> str:
        link = "up" if agent.link.connected else "down"
        return (f"waiting for VPP at {cfg.vpp.api_socket} "
                f"({agent.vpp.last_error or 'not connected yet'}); controller link {link}")

    agent.extra_tasks.append(lambda: start_keepalive(notifier, agent.started, waiting_for))
    if cfg.metrics.listen:
        registry = metrics_registry(AgentMetricsSource(
            agent.manager, agent.monitor, agent.vpp, jobs, agent.policies,
            link=agent.link, probes=agent.probes))
        agent.extra_tasks.append(lambda: run_metrics_server(registry, cfg.metrics.listen))
    def ready() -> None:
        notifier.ready(f"VPP {agent.vpp_version} connected, {len(agent.manager.desired)} peers")

    try:
        await run_until_signalled(agent, on_ready=ready)
    finally:
        notifier.stopping()
    return 0


async def _registration_interfaces(cfg: AgentConfig) -> list[dict[str, Any]] | None:
    """Interface entries read from VPP when it answers within 3 s, else None."""
    from agent.jobs.info import interface_entry
    from agent.vpp.readers import read_wan_facts

    client = VppClient(str(cfg.vpp.api_socket), connect_timeout=3.0, call_timeout=3.0)
    await client.start()
    try:
        await client.wait_connected(3.0)
        return [interface_entry(f) for f in await read_wan_facts(client, cfg.interfaces)]
    except (VppError, TimeoutError):
        return None
    finally:
        await client.close()


async def _register(cfg: AgentConfig, token: Secret) -> int:
    from agent.link.register import RegistrationError, default_facts, register

    interfaces = await _registration_interfaces(cfg)
    if interfaces is None:
        print("peering-agent: VPP not reachable: registering the [interfaces] table only",
              file=sys.stderr)
    try:
        result = await register(cfg, token, facts=default_facts(cfg, interfaces))
    except RegistrationError as e:
        print(f"peering-agent: registration failed: {e}", file=sys.stderr)
        return 1
    print(f"registered; device token stored in {result.token_file} (mode 0600)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="peering-agent", description=__doc__)
    parser.add_argument("--version", action="version", version=f"peering-agent {__version__}")
    parser.add_argument("--log-level", default="warning",
                        choices=["debug", "info", "warning", "error"])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    # no abbreviations: `--token SECRET` must not be taken for `--token-file SECRET`
    reg = sub.add_parser("register", help="register this device with the controller",
                         allow_abbrev=False)
    reg.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    reg.add_argument("--token-file", type=Path, default=None,
                     help="file holding the organisation token (default: read it from stdin; "
                     "never pass a token as an argument, ps shows arguments)")
    add_render_parser(sub, DEFAULT_CONFIG)
    info = sub.add_parser("vpp-info", help="connect to VPP and print what the agent finds")
    info.add_argument("--socket", default="/run/vpp/api.sock", help="VPP API socket")
    info.add_argument("--timeout", type=float, default=5.0)
    info.add_argument("--json", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run":
        cfg = _load(args.config)
        configure_logging(cfg.logging.level)
        tune_gc()
        return asyncio.run(_run(cfg))
    configure_logging(args.log_level)
    if args.command == "render-startup-conf":
        return render_startup_conf_cli(args)
    if args.command == "register":
        cfg = _load(args.config)
        if args.token_file is not None:
            try:
                token = args.token_file.read_text().strip()
            except OSError as e:
                print(f"peering-agent: cannot read the token file: {e.strerror}",
                      file=sys.stderr)
                return 2
        else:
            token = sys.stdin.readline().strip()
        if not token:
            print("peering-agent: register needs an organisation token", file=sys.stderr)
            return 2
        return asyncio.run(_register(cfg, Secret(token)))
    if args.command == "vpp-info":
        return asyncio.run(_vpp_info(args.socket, args.timeout, args.json))
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
