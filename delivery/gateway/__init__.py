"""The WebSocket gateway (wire protocol in docs/protocol.md)."""

from delivery.gateway.config import GatewayConfig
from delivery.gateway.connection import new_conn_id
from delivery.gateway.server import Gateway
from delivery.gateway.tokens import (
    ExpiredToken,
    InvalidToken,
    MissingToken,
    TokenError,
    issue_token,
    verify_token,
)

__all__ = [
    "ExpiredToken",
    "Gateway",
    "GatewayConfig",
    "InvalidToken",
    "MissingToken",
    "TokenError",
    "issue_token",
    "new_conn_id",
    "verify_token",
]
