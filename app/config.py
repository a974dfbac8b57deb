"""Service configuration: environment variables read by pydantic-settings.

Names are unprefixed and their defaults are fixed by docs/contract.md
(section 4). Routes and the app factory take a `Settings` through
`get_settings`, a cached dependency that tests override.
"""

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from fastapi import Depends, Request
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1024 * 1024


class Settings(BaseSettings):
    """Every knob of the service, read from the environment (names are unprefixed).

    Attributes:
        host: Interface uvicorn binds to (`HOST`, default 127.0.0.1).
        port: TCP port (`PORT`, default 8000).
        models_root: TF Serving-style repository `<root>/<name>/<version>/` (`MODELS_ROOT`).
        default_model: Model answering requests that name none (`DEFAULT_MODEL`).
        api_key: When set, every model endpoint requires it (`API_KEY`, default unset).
        enable_grad: Serve `/grad` and the `grad` signature (`ENABLE_GRAD`, default true).
        max_batch_rows: Most rows one request may carry (`MAX_BATCH_ROWS`, 4096).
        max_body_bytes: Most bytes one request body may carry (`MAX_BODY_BYTES`, 8 MiB).
        batch_max_size: Most rows the dynamic batcher coalesces into one model call
            (`BATCH_MAX_SIZE`, 64; 1 turns batching off).
        batch_max_wait_ms: How long the batcher waits for more rows (`BATCH_MAX_WAIT_MS`;
            0 takes what queued while the previous call ran).
        poll_interval_s: Seconds between scans of the models root (`POLL_INTERVAL_S`, 2).
        workers: uvicorn worker processes (`WORKERS`, 1).
        log_level: Log level (`LOG_LEVEL`, info).
        shutdown_grace_s: Seconds in-flight requests get after SIGTERM (`SHUTDOWN_GRACE_S`, 10).
        runtime: How signatures run (`RUNTIME`): `auto` (default) serves each
            inference signature on the fastest runtime whose answers are
            bit-identical to the SavedModel's on the warm-up inputs at 1, 2, 7 and
            64 rows: TensorFlow Lite, else the graph runtime (the signature frozen
            into a graph run by a Session in the calling thread), else the
            SavedModel; `graph` skips TFLite; `tflite` forces TFLite; `savedmodel`
            builds nothing else.
        grad_runtime: How the `grad` signature runs (`GRAD_RUNTIME`): `graph`
            (default: the graph runtime where bit-identical, else the SavedModel;
            no TFLite conversion, which costs 1-3 s of every load and whose floats
            are rarely bit-identical for gradients), `auto` (TFLite first, with its
            gradient ops rewritten, as above), `tflite` (forced: its floats may
            differ from the SavedModel's in the last bits; where it cannot run on
            TFLite it stays on the SavedModel) or `savedmodel`.
        max_response_bytes: Most bytes one response may carry (`MAX_RESPONSE_BYTES`, 32 MiB):
            a request whose answer would be larger gets 413 before the answer is built.
        max_concurrent_requests: Most model requests in flight at once, per worker
            (`MAX_CONCURRENT_REQUESTS`, 64): more wait in a queue. A request
            counts until its response is handed to the socket, so with
            `MAX_RESPONSE_BYTES` it bounds the memory of unread responses
            (64 x 32 MiB = 2 GiB at worst). Health, metrics and docs are not counted.
        max_queued_requests: Model requests that wait for a slot, per worker, before their
            body is read (`MAX_QUEUED_REQUESTS`, 256); more get 503 with `Retry-After`.
        max_connections: Most open connections (idle keep-alive ones included), per worker,
            before uvicorn answers 503 (`MAX_CONNECTIONS`, 1024; its `limit_concurrency`).
        model_load_timeout_s: How long loading and warming up one model version may take
            (`MODEL_LOAD_TIMEOUT_S`, 300) before it is refused and other models' scans go on.
    """

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    models_root: Path = Path("models")
    default_model: str = "digit-bits"
    api_key: SecretStr | None = None
    enable_grad: bool = True
    max_batch_rows: int = Field(default=4096, ge=1)
    max_body_bytes: int = Field(default=8 * MIB, ge=1024)
    batch_max_size: int = Field(default=64, ge=1)
    batch_max_wait_ms: float = Field(default=0.0, ge=0.0)
    poll_interval_s: float = Field(default=2.0, gt=0.0)
    workers: int = Field(default=1, ge=1)
    log_level: Literal["critical", "error", "warning", "info", "debug", "trace"] = "info"
    shutdown_grace_s: float = Field(default=10.0, ge=0.0)
    runtime: Literal["auto", "tflite", "graph", "savedmodel"] = "auto"
    grad_runtime: Literal["auto", "tflite", "graph", "savedmodel"] = "graph"
    max_response_bytes: int = Field(default=32 * MIB, ge=1024)
    max_concurrent_requests: int = Field(default=64, ge=1)
    max_queued_requests: int = Field(default=256, ge=0)
    max_connections: int = Field(default=1024, ge=1)
    model_load_timeout_s: float = Field(default=300.0, gt=0.0)

    @field_validator("log_level", "runtime", "grad_runtime", mode="before")
    @classmethod
    def _lower_log_level(cls, value: object) -> object:
        """Accept `LOG_LEVEL=INFO` (or `RUNTIME=TFLite`) as well as lower case."""
        return value.lower() if isinstance(value, str) else value

    @property
    def api_key_value(self) -> str | None:
        """The API key, or None when none is configured (an empty value counts as none)."""
        if self.api_key is None:
            return None
        value = self.api_key.get_secret_value()
        return value or None


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read from the environment once."""
    return Settings()


async def app_settings(request: Request) -> Settings:
    """The settings the app was built with (`create_app(settings)`), as a route dependency.

    Read from `app.state` rather than through `dependency_overrides`: FastAPI
    rebuilds an overridden dependency's signature on every request (~100 us),
    and runs a plain `def` dependency in its thread pool.
    """
    settings = getattr(request.app.state, "settings", None)
    return settings if settings is not None else get_settings()


SettingsDep = Annotated[Settings, Depends(app_settings)]
