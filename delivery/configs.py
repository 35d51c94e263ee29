"""The components' configs drawn from the settings, in one place: the routing policy's, a
presence replica's, a gateway's and producer flow control's. Every process builds them here
(worker, gateway, the embedded stack, ``delivery status``, producers); tests and benchmarks that
tune them build their own."""

from __future__ import annotations

from delivery.flow import FlowConfig
from delivery.gateway.config import GatewayConfig
from delivery.routing.policy import PolicyConfig
from delivery.settings import Settings
from presence.config import PresenceConfig


def policy_config(settings: Settings, *, push_enabled: bool = True) -> PolicyConfig:
    return PolicyConfig(
        ack_timeout_s=settings.ack_timeout_s,
        max_attempts=settings.max_attempts,
        retry_backoff_s=settings.retry_backoff_s,
        offline_grace_s=settings.offline_grace_s,
        reconnect_window_s=settings.reconnect_window_s,
        push_enabled=push_enabled,
    )


def presence_config(settings: Settings) -> PresenceConfig:
    return PresenceConfig(
        heartbeat_s=settings.presence_heartbeat_s,
        down_s=settings.presence_down_s,
        purge_s=settings.presence_purge_s,
    )


def gateway_config(settings: Settings) -> GatewayConfig:
    """A gateway node's limits: the defaults, with what the settings name."""
    return GatewayConfig(max_conns_per_user=settings.max_connections_per_user)


def flow_config(settings: Settings) -> FlowConfig:
    """Producer flow control: DELIVERY_MAX_BACKLOG (0: off), DELIVERY_BACKLOG_REFRESH_MS."""
    return FlowConfig(max_backlog=settings.max_backlog,
                      refresh_s=settings.backlog_refresh_ms / 1000.0)
