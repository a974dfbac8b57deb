"""Settings: the contract's environment variable names and defaults (contract section 4)."""

from pathlib import Path

import pytest

from app.config import MIB, Settings, get_settings

ENV_NAMES = [
    "HOST", "PORT", "MODELS_ROOT", "DEFAULT_MODEL", "API_KEY", "ENABLE_GRAD", "MAX_BATCH_ROWS",
    "MAX_BODY_BYTES", "BATCH_MAX_SIZE", "BATCH_MAX_WAIT_MS", "POLL_INTERVAL_S", "WORKERS",
    "LOG_LEVEL", "SHUTDOWN_GRACE_S", "RUNTIME", "GRAD_RUNTIME",
]  # fmt: skip


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_defaults_are_the_contracts(clean_env: pytest.MonkeyPatch) -> None:
    settings = Settings()
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.models_root == Path("models")
    assert settings.default_model == "digit-bits"
    assert settings.api_key_value is None
    assert settings.enable_grad is True
    assert settings.max_batch_rows == 4096
    assert settings.max_body_bytes == 8 * MIB
    assert (settings.batch_max_size, settings.batch_max_wait_ms) == (64, 0.0)
    assert settings.poll_interval_s == 2.0
    assert (settings.workers, settings.log_level, settings.shutdown_grace_s) == (1, "info", 10.0)
    assert (settings.runtime, settings.grad_runtime) == ("auto", "graph")


def test_every_setting_is_read_from_its_unprefixed_variable(clean_env: pytest.MonkeyPatch) -> None:
    values = {
        "HOST": "0.0.0.0",
        "PORT": "9001",
        "MODELS_ROOT": "/srv/models",
        "DEFAULT_MODEL": "digit-hash",
        "API_KEY": "k",
        "ENABLE_GRAD": "false",
        "MAX_BATCH_ROWS": "10",
        "MAX_BODY_BYTES": "2048",
        "BATCH_MAX_SIZE": "8",
        "BATCH_MAX_WAIT_MS": "1.5",
        "POLL_INTERVAL_S": "0.5",
        "WORKERS": "2",
        "LOG_LEVEL": "DEBUG",
        "SHUTDOWN_GRACE_S": "3",
        "RUNTIME": "Graph",
        "GRAD_RUNTIME": "TFLITE",
    }
    for name, value in values.items():
        clean_env.setenv(name, value)
    settings = Settings()
    assert settings.host == "0.0.0.0" and settings.port == 9001
    assert settings.models_root == Path("/srv/models")
    assert settings.default_model == "digit-hash"
    assert settings.api_key_value == "k"
    assert settings.enable_grad is False
    assert (settings.max_batch_rows, settings.max_body_bytes) == (10, 2048)
    assert (settings.batch_max_size, settings.batch_max_wait_ms) == (8, 1.5)
    assert settings.poll_interval_s == 0.5
    assert (settings.workers, settings.log_level, settings.shutdown_grace_s) == (2, "debug", 3.0)
    assert (settings.runtime, settings.grad_runtime) == ("graph", "tflite")


def test_empty_api_key_means_no_key(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("API_KEY", "")
    assert Settings().api_key_value is None


@pytest.mark.parametrize(
    ("name", "value"),
    [("PORT", "-1"), ("BATCH_MAX_SIZE", "0"), ("LOG_LEVEL", "loud"), ("GRAD_RUNTIME", "xla")],
)
def test_invalid_values_are_refused_at_start(
    clean_env: pytest.MonkeyPatch, name: str, value: str
) -> None:
    clean_env.setenv(name, value)
    with pytest.raises(ValueError, match=name.lower()):
        Settings()


def test_get_settings_is_cached(clean_env: pytest.MonkeyPatch) -> None:
    get_settings.cache_clear()
    try:
        assert get_settings() is get_settings()
    finally:
        get_settings.cache_clear()
