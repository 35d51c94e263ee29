"""Typed settings read from ``DELIVERY_*`` environment variables, validated at start-up.

Every variable is listed in the README's configuration table. The embedded default (no
variables set) runs everything in one process on SQLite and in-process transports, so the
demo works where neither Redis nor PostgreSQL is installed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from delivery.secret import WeakSecret, check_secret, data_dir_secret, parse_keys
from presence.shards import MAX_SHARDS, parse_shards

PREFIX = "DELIVERY_"
# How presence frames travel (DELIVERY_PRESENCE_PUBSUB): see docs/presence.md.
PUBSUB_MODES = ("classic", "sharded", "cluster")
# Message TTLs (the send's ``ttl_s`` and DELIVERY_MESSAGE_TTL_S) lie in (0, MAX_TTL_S].
MAX_TTL_S = 366 * 24 * 3600.0
# Token lifetimes (``delivery token --ttl``, DELIVERY_TOKEN_TTL_S) lie in (0, MAX_TOKEN_TTL_S].
MAX_TOKEN_TTL_S = 366 * 24 * 3600.0
# Clock skew tolerated on a token's exp/nbf (DELIVERY_TOKEN_LEEWAY_S) lies in [0, this].
MAX_TOKEN_LEEWAY_S = 300.0


class SettingsError(ValueError):
    """A configuration value is missing or invalid; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    env: str = "dev"
    data_dir: str = "./data"
    database_url: str = ""
    broker_url: str = ""
    redis_url: str = ""
    secret: str = ""
    key_prefix: str = "delivery"
    ack_timeout_s: float = 2.0
    max_attempts: int = 3
    retry_backoff_s: float = 0.2
    offline_grace_s: float = 0.25
    reconnect_window_s: float = 1.0
    message_ttl_s: float = 7 * 24 * 3600.0
    max_body_bytes: int = 16 * 1024
    max_body_depth: int = 64
    sweep_interval_s: float = 0.5
    sweep_batch: int = 200
    sweep_lease_s: float = 5.0
    visibility_timeout_s: float = 300.0
    presence_heartbeat_s: float = 0.25
    presence_down_s: float = 3.0
    presence_purge_s: float = 60.0
    # Sharded presence and routing (docs/scaling.md): S, fixed at deploy time; 1 = unsharded.
    presence_shards: int = 1
    # The shards a worker serves, e.g. "0,2" or "0-3"; empty: all of them.
    worker_shards: str = ""
    # classic PUBLISH/SUBSCRIBE, sharded SPUBLISH/SSUBSCRIBE (Redis >= 7), or a Redis Cluster.
    presence_pubsub: str = "classic"
    # Presence's own Redis (a Redis Cluster with presence_pubsub=cluster); empty: REDIS_URL.
    presence_redis_url: str = ""
    token_ttl_s: float = 24 * 3600.0
    token_keys: str = ""
    token_audience: str = ""
    token_issuer: str = ""
    token_leeway_s: float = 10.0
    token_legacy: int = 1
    # 1: direct messages give their senders delivered/read receipts too (groups always do).
    direct_receipts: int = 0
    api_keys: str = ""
    api_max_in_flight: int = 32
    fcm_credentials: str = ""
    fcm_project: str = ""
    fcm_url: str = ""
    push_max_retries: int = 5
    metrics_port: int = 0
    max_connections_per_user: int = 10
    max_conversation_members: int = 1000
    allowed_origins: str = ""
    db_pool_size: int = 10
    db_max_overflow: int = 20
    send_batch_max: int = 64
    send_batch_inflight: int = 1
    # Tasks a worker process takes from the broker ahead: this x its concurrency (Celery's
    # worker_prefetch_multiplier). It bounds what a worker holds unacked, and so its batches.
    worker_prefetch_multiplier: int = 4
    # Redis brokers: most tasks one wake-up of a worker's consumer takes from the queue (one BRPOP
    # plus one atomic pop-and-record of the rest, within the prefetch window); 1: kombu's one.
    broker_fetch_max: int = 16
    # Producer flow control (delivery/flow.py): refuse sends while the task's broker queue holds
    # this many tasks or more (0: off); a depth reading is reused for this many milliseconds.
    max_backlog: int = 0
    backlog_refresh_ms: float = 5.0
    # Server processes' thread switch interval (delivery/gil.py); 0: Python's default (5 ms).
    gil_switch_ms: float = 0.5
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def embedded(self) -> bool:
        """True when no broker is configured: everything runs in one process."""
        return not self.broker_url or self.broker_url.startswith("memory://")

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{Path(self.data_dir).resolve() / 'delivery.db'}"

    @property
    def effective_presence_redis_url(self) -> str:
        return self.presence_redis_url or self.redis_url

    @property
    def served_shards(self) -> tuple[int, ...]:
        """DELIVERY_WORKER_SHARDS parsed (every shard when empty)."""
        return parse_shards(self.worker_shards, self.presence_shards)

    @property
    def effective_broker_url(self) -> str:
        return self.broker_url or "memory://localhost/"

    @property
    def shared(self) -> bool:
        """True when this process talks to a shared service (PostgreSQL, a broker, Redis):
        then tokens must be signed with an explicit DELIVERY_SECRET."""
        db = self.database_url and not self.database_url.startswith("sqlite")
        return bool(db or not self.embedded or self.redis_url)

    @property
    def effective_secret(self) -> str:
        """DELIVERY_SECRET; in the embedded default, a random secret kept in the data dir."""
        if self.secret:
            check_secret(self.secret)
            return self.secret
        if self.shared:
            raise SettingsError(f"{PREFIX}SECRET is required with a shared database, broker or "
                                "Redis URL")
        return data_dir_secret(self.data_dir)

    @property
    def api_key_list(self) -> tuple[str, ...]:
        """DELIVERY_API_KEYS: the server keys ``POST /v1/messages`` accepts (rotation: several)."""
        return parse_keys(self.api_keys, f"{PREFIX}API_KEYS")

    @property
    def origins(self) -> tuple[str, ...]:
        """DELIVERY_ALLOWED_ORIGINS split on commas; empty: any Origin (see docs/security.md)."""
        return tuple(o.strip().rstrip("/") for o in self.allowed_origins.split(",") if o.strip())

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name == "extra":
                continue
            var = PREFIX + f.name.upper()
            raw = environ.get(var)
            if raw is None or raw == "":
                continue
            values[f.name] = _convert(var, raw, f.type)
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise SettingsError(f"{_var(f.name)} must be a finite number, got {value}")
        if self.env not in ("dev", "production"):
            raise SettingsError(f"DELIVERY_ENV must be 'dev' or 'production', got {self.env!r}")
        for name in ("database_url", "broker_url", "redis_url", "fcm_url", "presence_redis_url"):
            value = getattr(self, name)
            if value:
                _check_url(PREFIX + name.upper(), value)
        positive = (
            "ack_timeout_s", "message_ttl_s", "sweep_interval_s", "sweep_lease_s",
            "visibility_timeout_s",
            "presence_heartbeat_s", "presence_down_s", "presence_purge_s", "token_ttl_s",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise SettingsError(f"{_var(name)} must be > 0, got {getattr(self, name)}")
        non_negative = ("retry_backoff_s", "offline_grace_s", "reconnect_window_s",
                        "push_max_retries", "metrics_port", "db_max_overflow", "gil_switch_ms",
                        "max_backlog", "backlog_refresh_ms")
        for name in non_negative:
            if getattr(self, name) < 0:
                raise SettingsError(f"{_var(name)} must be >= 0, got {getattr(self, name)}")
        for name in ("max_attempts", "max_body_bytes", "max_body_depth", "sweep_batch",
                     "max_connections_per_user", "db_pool_size", "max_conversation_members",
                     "api_max_in_flight", "send_batch_max", "send_batch_inflight",
                     "worker_prefetch_multiplier", "broker_fetch_max"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{_var(name)} must be >= 1, got {getattr(self, name)}")
        if self.presence_down_s <= 2 * self.presence_heartbeat_s:
            raise SettingsError(
                "DELIVERY_PRESENCE_DOWN_S must be more than twice DELIVERY_PRESENCE_HEARTBEAT_S"
            )
        if self.presence_purge_s <= self.presence_down_s:
            raise SettingsError(
                "DELIVERY_PRESENCE_PURGE_S must be more than DELIVERY_PRESENCE_DOWN_S"
            )
        if not 1 <= self.presence_shards <= MAX_SHARDS:
            raise SettingsError(
                f"DELIVERY_PRESENCE_SHARDS must be 1..{MAX_SHARDS}, got {self.presence_shards}")
        try:
            parse_shards(self.worker_shards, self.presence_shards)
        except ValueError as exc:
            raise SettingsError(f"DELIVERY_WORKER_SHARDS: {exc}") from None
        if self.presence_pubsub not in PUBSUB_MODES:
            raise SettingsError(f"DELIVERY_PRESENCE_PUBSUB must be one of "
                                f"{', '.join(PUBSUB_MODES)}, got {self.presence_pubsub!r}")
        if self.presence_pubsub == "cluster" and not self.presence_redis_url:
            raise SettingsError("DELIVERY_PRESENCE_REDIS_URL (a node of the Redis Cluster) is "
                                "required when DELIVERY_PRESENCE_PUBSUB=cluster")
        if self.max_body_depth > 256:  # json, kombu and the drivers recurse per level
            raise SettingsError("DELIVERY_MAX_BODY_DEPTH must be at most 256")
        if self.message_ttl_s > MAX_TTL_S:
            raise SettingsError(f"DELIVERY_MESSAGE_TTL_S must be at most {MAX_TTL_S:g}")
        if self.token_ttl_s > MAX_TOKEN_TTL_S:
            raise SettingsError(f"DELIVERY_TOKEN_TTL_S must be at most {MAX_TOKEN_TTL_S:g}")
        self._validate_tokens()
        if self.env == "production":
            if not self.secret:
                raise SettingsError("DELIVERY_SECRET is required when DELIVERY_ENV=production")
            for name in ("database_url", "broker_url", "redis_url"):
                if not getattr(self, name):
                    raise SettingsError(
                        f"{PREFIX}{name.upper()} is required when DELIVERY_ENV=production"
                    )
        if not self.embedded and not self.redis_url:
            raise SettingsError(
                "DELIVERY_REDIS_URL is required when DELIVERY_BROKER_URL names a real broker "
                "(presence and gateway channels travel over Redis)"
            )
        if self.secret:
            try:
                check_secret(self.secret)
            except WeakSecret as exc:
                raise SettingsError(str(exc)) from None
        elif self.shared:
            raise SettingsError(
                "DELIVERY_SECRET is required when a database, broker or Redis URL is set "
                "(anyone could mint tokens with a built-in one)"
            )

    def _validate_tokens(self) -> None:
        if not 0 <= self.token_leeway_s <= MAX_TOKEN_LEEWAY_S:
            raise SettingsError(f"DELIVERY_TOKEN_LEEWAY_S must be in [0, {MAX_TOKEN_LEEWAY_S:g}]"
                                f", got {self.token_leeway_s}")
        if self.direct_receipts not in (0, 1):
            raise SettingsError(
                f"DELIVERY_DIRECT_RECEIPTS must be 0 or 1, got {self.direct_receipts}")
        if self.token_legacy not in (0, 1):
            raise SettingsError(f"DELIVERY_TOKEN_LEGACY must be 0 or 1, got {self.token_legacy}")
        if self.token_keys:
            from delivery.token_keys import BadTokenKeys, parse_token_keys

            try:
                parse_token_keys(self.token_keys)
            except BadTokenKeys as exc:
                raise SettingsError(str(exc)) from None
        try:
            self.api_key_list  # noqa: B018 - validates each key
        except WeakSecret as exc:
            raise SettingsError(str(exc)) from None


def _var(name: str) -> str:
    return PREFIX + name.upper()


def _convert(var: str, raw: str, type_name: Any) -> Any:
    type_name = str(type_name)
    try:
        if type_name == "float":
            return float(raw)
        if type_name == "int":
            return int(raw)
    except ValueError:
        raise SettingsError(f"{var} must be a number, got {raw!r}") from None
    return raw


# Schemes each URL variable accepts (driver suffixes such as postgresql+psycopg are allowed).
SCHEMES = {
    "DELIVERY_DATABASE_URL": ("postgresql", "sqlite"),
    "DELIVERY_BROKER_URL": ("redis", "rediss", "amqp", "amqps", "pyamqp", "memory"),
    "DELIVERY_REDIS_URL": ("redis", "rediss"),
    "DELIVERY_PRESENCE_REDIS_URL": ("redis", "rediss"),
    "DELIVERY_FCM_URL": ("http", "https"),
}


def _check_url(var: str, value: str) -> None:
    parts = urlsplit(value)
    if not parts.scheme:
        raise SettingsError(f"{var} is not a URL: {value!r}")
    allowed = SCHEMES.get(var)
    if allowed and parts.scheme.split("+", 1)[0] not in allowed:
        raise SettingsError(f"{var}: unsupported scheme {parts.scheme + '://'!r} "
                            f"(use one of {', '.join(a + '://' for a in allowed)})")
    if parts.scheme.startswith("sqlite") or parts.scheme == "memory":
        return
    if not parts.hostname:
        raise SettingsError(f"{var} has no host: {value!r}")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise SettingsError(f"{var} has a bad port: {value!r}") from None


_cached: Settings | None = None


def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    global _cached
    if _cached is None:
        _cached = Settings.from_env()
    return _cached


def reset_settings() -> None:
    """Forget the cached settings (tests and CLI commands that change the environment)."""
    global _cached
    _cached = None
