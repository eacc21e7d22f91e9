"""The registry of controller message kinds: one entry per name, consistent sets."""

from __future__ import annotations

from agent.jobs import messages
from agent.jobs.devcfg import is_config_message, split_message
from agent.jobs.messages import KINDS, Handling


def test_every_name_is_registered_once() -> None:
    names = [k.name for k in messages._KINDS]
    assert len(names) == len(set(names)) == len(KINDS)


def test_configuration_messages_are_signed_and_parsed_by_the_config_db() -> None:
    for name in messages.CONFIG_MESSAGES:
        assert is_config_message(name) and KINDS[name].signed
        assert name in messages.ROUTER_MESSAGES or split_message(name) is not None
    assert "modify-route" not in KINDS  # routes are not modifiable in flexiManage
    assert {"add-tunnel", "remove-tunnel", "modify-tunnel"} <= messages.CONFIG_MESSAGES


def test_the_hash_chain_and_the_handling_sets() -> None:
    assert messages.CONFIG_MESSAGES | {messages.AGGREGATED} == messages.SIGNED
    assert messages.SYNC_DEVICE not in messages.SIGNED  # it resets the chain instead
    assert {"get-device-info", "get-device-stats"} == messages.QUERY_MESSAGES
    assert messages.EXEC_TIMEOUT in messages.DIRECT_MESSAGES
    for name, why in messages.REFUSED.items():
        assert why and KINDS[name].handling is Handling.REFUSED and not is_config_message(name)


def test_metric_labels_and_reply_entities() -> None:
    # the label values the job metrics have always had; anything else counts as "other"
    assert set(messages.METRIC_MESSAGES) == {
        "add-tunnel", "remove-tunnel", "modify-tunnel", "aggregated", "sync-device",
        "get-device-info", "get-device-stats"}
    assert messages.reply_entity("exec_timeout") == "osReply"
    assert messages.reply_entity("get-device-logs") == "agentReply"
    assert messages.reply_entity("no-such-message") == "agentReply"
