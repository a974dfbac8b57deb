"""`python -m app`: serve with uvicorn, configured from the environment (contract section 4).

HOST, PORT, WORKERS, LOG_LEVEL, SHUTDOWN_GRACE_S and MAX_CONNECTIONS (its
`limit_concurrency`) go to uvicorn; uvicorn's
access log is off (the service logs each request itself, as JSON, with its
request id). Each worker process builds its own app through the factory,
limits TensorFlow to one intra-op and one inter-op thread, and freezes the
garbage collector's view of the heap once its model is warm.
"""

import math
import os
import signal
import sys
from types import FrameType


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    sys.exit(0)


def main() -> None:
    """Run the service until SIGINT/SIGTERM (then in-flight requests get SHUTDOWN_GRACE_S)."""
    # Before TensorFlow is imported: keep its C++ start-up chatter out of the JSON logs.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import uvicorn

    from app.config import get_settings
    from app.logs import configure_logging, logging_config

    settings = get_settings()
    configure_logging(settings.log_level)
    # uvicorn handles SIGTERM (graceful shutdown), restores this handler, then
    # re-raises the signal: exiting through it makes a graceful stop exit 0.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        log_config=logging_config(settings.log_level),
        access_log=False,
        timeout_graceful_shutdown=max(1, math.ceil(settings.shutdown_grace_s)),
        server_header=False,
        limit_concurrency=settings.max_connections,
    )


if __name__ == "__main__":
    main()
