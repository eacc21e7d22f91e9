"""Operator surface of the daemon: systemd notification, VPP startup.conf, metrics.

Each module is independent of the agent's other rooms: they get plain data
(environment, configuration, a `MetricsSource`) and are wired in `agent.main`.
"""
