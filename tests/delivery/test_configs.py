"""Each component's config carries the settings that name it."""

from __future__ import annotations

from delivery.configs import gateway_config, policy_config, presence_config
from delivery.settings import Settings


def test_policy_config_takes_the_routing_settings() -> None:
    s = Settings(ack_timeout_s=3.0, max_attempts=5, retry_backoff_s=0.3, offline_grace_s=0.5,
                 reconnect_window_s=2.0)
    cfg = policy_config(s, push_enabled=False)
    assert (cfg.ack_timeout_s, cfg.max_attempts, cfg.retry_backoff_s, cfg.offline_grace_s,
            cfg.reconnect_window_s, cfg.push_enabled) == (3.0, 5, 0.3, 0.5, 2.0, False)


def test_presence_config_takes_the_presence_settings() -> None:
    cfg = presence_config(Settings(presence_heartbeat_s=0.5, presence_down_s=4.0,
                                   presence_purge_s=90.0))
    assert (cfg.heartbeat_s, cfg.down_s, cfg.purge_s) == (0.5, 4.0, 90.0)


def test_gateway_config_takes_the_connection_limit() -> None:
    assert gateway_config(Settings(max_connections_per_user=3)).max_conns_per_user == 3
