import pytest

from delivery.settings import Settings, SettingsError


def test_embedded_default_needs_nothing() -> None:
    s = Settings.from_env({})
    assert s.embedded
    assert s.effective_database_url.startswith("sqlite:///")
    assert s.effective_broker_url.startswith("memory://")
    assert s.effective_secret


def test_values_are_read_and_typed() -> None:
    s = Settings.from_env({
        "DELIVERY_ACK_TIMEOUT_S": "1.5", "DELIVERY_MAX_ATTEMPTS": "5",
        "DELIVERY_BROKER_URL": "redis://127.0.0.1:6379/0",
        "DELIVERY_REDIS_URL": "redis://127.0.0.1:6379/0",
    })
    assert s.ack_timeout_s == 1.5 and s.max_attempts == 5 and not s.embedded


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"DELIVERY_ACK_TIMEOUT_S": "-1"}, "DELIVERY_ACK_TIMEOUT_S"),
        ({"DELIVERY_ACK_TIMEOUT_S": "soon"}, "DELIVERY_ACK_TIMEOUT_S"),
        ({"DELIVERY_MAX_ATTEMPTS": "0"}, "DELIVERY_MAX_ATTEMPTS"),
        ({"DELIVERY_MAX_CONNECTIONS_PER_USER": "0"}, "DELIVERY_MAX_CONNECTIONS_PER_USER"),
        ({"DELIVERY_DATABASE_URL": "not a url"}, "DELIVERY_DATABASE_URL"),
        ({"DELIVERY_REDIS_URL": "redis://:99999999"}, "DELIVERY_REDIS_URL"),
        ({"DELIVERY_ENV": "production"}, "DELIVERY_SECRET"),
        ({"DELIVERY_ENV": "staging"}, "DELIVERY_ENV"),
        ({"DELIVERY_BROKER_URL": "redis://127.0.0.1:6379/0"}, "DELIVERY_REDIS_URL"),
        ({"DELIVERY_PRESENCE_DOWN_S": "0.3"}, "DELIVERY_PRESENCE_DOWN_S"),
        (
            {"DELIVERY_ENV": "production", "DELIVERY_SECRET": "s3cret"},
            "DELIVERY_DATABASE_URL",
        ),
    ],
)
def test_bad_values_stop_startup_naming_the_variable(env: dict[str, str], names: str) -> None:
    with pytest.raises(SettingsError, match=names):
        Settings.from_env(env)
