"""The model repository: scan `<MODELS_ROOT>/<name>/<version>/`, load, validate, warm up, swap.

Policy (TF Serving's "latest", availability preserving):

- each model serves its newest loadable version; a new version is loaded,
  validated against the contract and warmed up in a worker thread while the
  old one keeps serving, then swapped in with one assignment;
- a version that fails is refused and logged once; it is retried only when
  its directory changes (files, sizes or modification times);
- when the serving version's directory disappears, the newest remaining
  loadable version takes over, or the model has no serving version (not ready);
- names starting with `.` (temporary exports) are ignored; the models root may
  be missing or empty at start: the service is then live but not ready, and
  becomes ready when a model appears;
- each model is reconciled by its own task, so one model's slow load never
  delays another's; a load (with its warm-up) that takes longer than
  `MODEL_LOAD_TIMEOUT_S` is refused like a broken version, and its thread
  (which cannot be stopped) is left to finish on its own;
- a model directory that cannot be listed (an `OSError`: a network
  filesystem blip) keeps its entry and serving version until it can be.
"""

import asyncio
import contextlib
import gc
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from app.batching import Batcher, Tensors, split_dict
from app.config import Settings
from app.errors import ModelNotFound, ModelNotReady
from app.metadata import METADATA_FILE, read_model_info, without_paths
from app.metrics import ServiceMetrics
from app.predictor import InvalidModel, SignatureRunner, load_predictor
from app.served import ServedVersion, select_runtimes

logger = logging.getLogger(__name__)

# Both are used with `fullmatch`: a `$` would also match before a trailing newline
# (a directory named "3\n" would count as version 3).
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_VERSION_PATTERN = re.compile(r"[0-9]{1,18}")

Stamp = tuple[tuple[str, int, int], ...]


def valid_name(name: str) -> bool:
    """Whether `name` is a model name: 1-128 letters, digits, `.`, `_` or `-`, not led by `.`."""
    return NAME_PATTERN.fullmatch(name) is not None


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def scan_models_root(root: Path) -> dict[str, dict[int, Path] | None] | None:
    """Model and version directories under a models root.

    Args:
        root: The models root.

    Returns:
        `{model name: {version: path}}` (models without versions included,
        with an empty dict; None for a model directory that could not be
        listed this time), or None when the root does not exist.
    """
    try:
        model_dirs = [e for e in os.scandir(root) if not e.name.startswith(".") and _is_dir(e)]
    except (FileNotFoundError, NotADirectoryError):
        return None
    found: dict[str, dict[int, Path] | None] = {}
    for model_dir in model_dirs:
        if not valid_name(model_dir.name):
            continue
        try:
            found[model_dir.name] = scan_versions(Path(model_dir.path))
        except OSError as exc:
            logger.warning(
                "cannot list model directory; keeping its current state: %s",
                exc.strerror or type(exc).__name__,
                extra={"model": model_dir.name},
            )
            found[model_dir.name] = None
    return found


def scan_versions(model_dir: Path) -> dict[int, Path]:
    """The version directories of one model directory (names of 1-18 digits, > 0).

    Raises:
        OSError: The directory cannot be listed.
    """
    versions: dict[int, Path] = {}
    with os.scandir(model_dir) as entries:
        for entry in entries:
            if _VERSION_PATTERN.fullmatch(entry.name) and int(entry.name) > 0 and _is_dir(entry):
                versions[int(entry.name)] = Path(entry.path)
    return versions


def run_in_daemon_thread(fn: Callable[[], Any]) -> asyncio.Future[Any]:
    """Run `fn` in a new daemon thread; its result or exception resolves the returned future.

    A daemon thread, not the default executor: a load that never returns must
    neither occupy a worker that model calls need nor keep the process from
    exiting on SIGTERM.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def deliver(outcome: Any, failed: bool) -> None:
        if future.done():  # timed out and given up on
            return
        if failed:
            future.set_exception(outcome)
        else:
            future.set_result(outcome)

    def target() -> None:
        try:
            result: Any = fn()
            failed = False
        except BaseException as exc:
            result, failed = exc, True
        # RuntimeError: the loop is closed, nobody waits any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(deliver, result, failed)

    threading.Thread(target=target, name="model-load", daemon=True).start()
    return future


def version_stamp(path: Path) -> Stamp:
    """What a version directory holds (path, size, mtime of every file): it changes on edits."""
    stamp: list[tuple[str, int, int]] = []
    for dirpath, _, filenames in os.walk(path):
        for filename in filenames:
            full = os.path.join(dirpath, filename)
            try:
                info = os.stat(full)
            except OSError:
                continue
            stamp.append((os.path.relpath(full, path), info.st_size, info.st_mtime_ns))
    return tuple(sorted(stamp))


@dataclass(eq=False)
class Refusal:
    """A version that failed to load, and the directory contents it failed with."""

    stamp: Stamp
    reason: str


@dataclass(eq=False)
class ModelEntry:
    """One model directory: its versions on disk, the serving one, the refused ones."""

    name: str
    on_disk: dict[int, Path] = field(default_factory=dict)
    serving: ServedVersion | None = None
    refused: dict[int, Refusal] = field(default_factory=dict)
    #: The task bringing this model to its newest loadable version, while one runs.
    reconciling: asyncio.Task[bool] | None = None
    #: The version being loaded and warmed up right now, if any.
    loading: int | None = None

    @property
    def awaiting_load(self) -> bool:
        """Not serving, and a version on disk is loading or not yet tried (False once every
        version on disk was refused)."""
        if self.serving is not None:
            return False
        return self.loading is not None or any(v not in self.refused for v in self.on_disk)


class ModelRepository:
    """The models the service serves, kept in step with the models root by a poller.

    Args:
        settings: The service settings (models root, default model, batching, poll interval).
        metrics: Where load outcomes, versions and batch sizes are recorded.
    """

    def __init__(self, settings: Settings, metrics: ServiceMetrics) -> None:
        self._settings = settings
        self._metrics = metrics
        self._root = settings.models_root
        self._models: dict[str, ModelEntry] = {}
        self._root_exists = False
        self._scanned = False
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._froze = False

    # -- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        """Start the poller: a first scan at once, then one every `POLL_INTERVAL_S`."""
        # A fresh lock per lifespan: an asyncio lock binds to the loop that first waits on it,
        # and a test harness may run the lifespan again on another loop.
        self._lock = asyncio.Lock()
        self._task = asyncio.create_task(self._poll_forever(), name="model-poller")

    async def stop(self) -> None:
        """Stop the poller and any model reconciliation still running."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for entry in self._models.values():
            task = entry.reconciling
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def wait_ready(self, timeout_s: float) -> bool:
        """Wait until ready or `timeout_s` passes; returns whether it is ready."""
        deadline = time.monotonic() + timeout_s
        while not self.ready and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return self.ready

    async def _poll_forever(self) -> None:
        while True:
            try:
                await self.poll_once(wait=False)
            except asyncio.CancelledError:
                raise
            except Exception:  # a poll must never kill the poller
                logger.exception("models root scan failed")
            await asyncio.sleep(self._settings.poll_interval_s)

    async def poll_once(self, wait: bool = True) -> None:
        """Scan the models root once and load, swap, fall back or forget as needed.

        The scan and the bookkeeping hold the repository lock; each model's
        loading runs in that model's own task, outside the lock, so a slow or
        hung load delays neither the next scan nor any other model.

        Args:
            wait: Wait for every model's reconciliation to finish (each load is
                bounded by `MODEL_LOAD_TIMEOUT_S`). The poller passes False: a
                model still loading is left to its task and skipped this round.
        """
        async with self._lock:
            disk = await asyncio.to_thread(scan_models_root, self._root)
            self._root_exists = disk is not None
            disk = disk or {}
            for name in list(self._models):
                if name not in disk:
                    logger.warning(
                        "model directory removed; model no longer served", extra={"model": name}
                    )
                    self._metrics.model_version.labels(name).set(0)
                    del self._models[name]
            tasks: list[asyncio.Task[bool]] = []
            for name, versions in sorted(disk.items()):
                entry = self._models.setdefault(name, ModelEntry(name))
                if entry.reconciling is not None:
                    tasks.append(entry.reconciling)  # still loading: leave it to its task
                    continue
                if versions is None:  # unreadable this time: keep what it had
                    continue
                entry.on_disk = versions
                task = asyncio.create_task(self._reconcile_task(entry), name=f"load-{name}")
                entry.reconciling = task
                tasks.append(task)
            self._scanned = True
            self._metrics.ready.set(1 if self.ready else 0)
        if wait and tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _reconcile_task(self, entry: ModelEntry) -> bool:
        """One model's reconciliation, as its own task: swap, metrics, heap freeze."""
        try:
            swapped = await self._reconcile(entry)
        except asyncio.CancelledError:
            raise
        except Exception:  # one model's failure must not stop the others or the poller
            logger.exception("model reconciliation failed", extra={"model": entry.name})
            swapped = False
        finally:
            entry.reconciling = None
        self._metrics.ready.set(1 if self.ready else 0)
        if swapped:
            self._freeze_heap()
        return swapped

    async def _reconcile(self, entry: ModelEntry) -> bool:
        """Bring one model to its newest loadable version; True when the serving version changed."""
        for version in list(entry.refused):
            if version not in entry.on_disk:
                del entry.refused[version]
        serving = entry.serving
        serving_present = serving is not None and serving.version in entry.on_disk
        for version in sorted(entry.on_disk, reverse=True):
            if serving_present and serving is not None and version <= serving.version:
                return False
            path = entry.on_disk[version]
            stamp = await asyncio.to_thread(version_stamp, path)
            refusal = entry.refused.get(version)
            if refusal is not None and refusal.stamp == stamp:
                continue
            entry.loading = version
            try:
                served = await self._load_with_timeout(entry.name, version, path)
            except InvalidModel as exc:
                entry.refused[version] = Refusal(stamp, str(exc))
                self._metrics.model_loads.labels(entry.name, "refused").inc()
                logger.error(
                    "refused model version: %s",
                    exc,
                    extra={"model": entry.name, "version": version, "path": str(path)},
                )
                continue
            finally:
                entry.loading = None
            entry.refused.pop(version, None)
            entry.serving = served
            self._metrics.model_loads.labels(entry.name, "loaded").inc()
            self._metrics.model_version.labels(entry.name).set(version)
            logger.info(
                "serving model version",
                extra={
                    "model": entry.name,
                    "version": version,
                    "previous_version": serving.version if serving else None,
                },
            )
            return True
        if serving is not None and not serving_present:
            logger.error(
                "serving version's directory disappeared and no other version loads; "
                "model not ready",
                extra={"model": entry.name, "version": serving.version},
            )
            entry.serving = None
            self._metrics.model_version.labels(entry.name).set(0)
            return True
        return False

    async def _load_with_timeout(self, name: str, version: int, path: Path) -> ServedVersion:
        """`_load` in a daemon thread, given up on after `MODEL_LOAD_TIMEOUT_S`.

        Raises:
            InvalidModel: The version is broken, or its load took too long (then
                the thread is abandoned: Python cannot stop it, and its result
                is dropped when it arrives).
        """
        timeout_s = self._settings.model_load_timeout_s
        future = run_in_daemon_thread(lambda: self._load(name, version, path))
        try:
            return await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            raise InvalidModel(
                f"loading and warming it up took longer than {timeout_s:g} s (MODEL_LOAD_TIMEOUT_S)"
            ) from None

    def _load(self, name: str, version: int, path: Path) -> ServedVersion:
        """Load, validate and warm up one version (runs in a worker thread)."""
        predictor = load_predictor(path)
        info = read_model_info(path, predictor.runners)
        settings = self._settings
        wait_s = settings.batch_max_wait_ms / 1000.0

        def make_batcher(signature: str, runner: SignatureRunner) -> Batcher[Tensors]:
            return Batcher(
                runner,
                split_dict,
                max_rows=settings.batch_max_size,
                max_wait_s=wait_s,
                observe=self._metrics.observer(name, signature),
            )

        served = ServedVersion(name, version, predictor, info, make_batcher)
        served.warm_up()
        # With /grad disabled nothing calls `grad`: no load time spent converting it.
        grad_runtime = settings.grad_runtime if settings.enable_grad else "disabled"
        select_runtimes(served, path, settings.runtime, grad_runtime)
        served.check_batching(settings.batch_max_size > 1)
        return served

    def _freeze_heap(self) -> None:
        """Collect once and freeze what survives (TensorFlow's ~300k objects).

        A full collection with TensorFlow loaded takes ~140 ms; freezing the
        long-lived objects keeps later collections (and tail latency) small.
        Unfreezing first lets a replaced version's objects be collected.
        """
        if self._froze:
            gc.unfreeze()
        gc.collect()
        gc.freeze()
        self._froze = True

    # -- queries -----------------------------------------------------------

    @property
    def ready(self) -> bool:
        """True when a model serves a version and `DEFAULT_MODEL`, when on disk, is not still
        waiting for its first load (requests naming no model would get 503 meanwhile)."""
        if not any(entry.serving is not None for entry in self._models.values()):
            return False
        return self._default_awaiting_load() is None

    def _default_awaiting_load(self) -> ModelEntry | None:
        """`DEFAULT_MODEL`'s entry while it awaits its first load (`ModelEntry.awaiting_load`)."""
        entry = self._models.get(self._settings.default_model)
        return entry if entry is not None and entry.awaiting_load else None

    @property
    def not_ready_reason(self) -> str:
        """Why the service is not ready (empty when it is)."""
        if self.ready:
            return ""
        waiting = self._default_awaiting_load()
        if waiting is not None and self._scanned:
            return (
                f"Loading the default model '{waiting.name}' (DEFAULT_MODEL); "
                "other models may already answer requests that name them."
            )
        if not self._scanned:
            return "Loading models: the first scan of MODELS_ROOT has not finished."
        if any(entry.loading is not None for entry in self._models.values()):
            return "Loading models: a version is being loaded and warmed up."
        if not self._root_exists:
            return "The models root (MODELS_ROOT) does not exist yet; waiting for a model."
        if not any(entry.on_disk for entry in self._models.values()):
            return "The models root (MODELS_ROOT) holds no model version yet; waiting for one."
        refusals = [
            f"{entry.name} version {version}: {refusal.reason}"
            for entry in self._models.values()
            for version, refusal in sorted(entry.refused.items())
        ]
        return "No model version could be loaded" + (
            " (" + "; ".join(refusals[:5]) + ")." if refusals else "."
        )

    @property
    def default_name(self) -> str | None:
        """The model answering requests that name none.

        `DEFAULT_MODEL` whenever it is on disk (served, loading, or refused: never another
        model in its place); otherwise the only served model, if exactly one is.
        """
        configured = self._settings.default_model
        entry = self._models.get(configured)
        if entry is not None and (entry.on_disk or entry.serving is not None):
            return configured
        served = [name for name, e in self._models.items() if e.serving is not None]
        return served[0] if len(served) == 1 else None

    def entries(self) -> list[ModelEntry]:
        """Every model found on disk, by name."""
        return [self._models[name] for name in sorted(self._models)]

    def entry(self, name: str) -> ModelEntry:
        """One model's entry.

        Raises:
            ModelNotFound: Invalid name, or no such model directory.
        """
        if not valid_name(name):
            raise ModelNotFound(
                "Invalid model name: names are 1-128 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit."
            )
        entry = self._models.get(name)
        if entry is None:
            available = ", ".join(sorted(self._models)) or "none"
            raise ModelNotFound(f"Model '{name}' not found; available models: {available}.")
        return entry

    def resolve(self, name: str | None, version: int | None = None) -> ServedVersion:
        """The served version answering a request.

        Args:
            name: The model named in the request, or None for the default model.
            version: The version named in the request, or None for the serving one.

        Returns:
            The `ServedVersion` to call.

        Raises:
            ModelNotFound: Unknown model, or a version that is not served.
            ModelNotReady: Nothing loaded yet (for this model or at all).
        """
        if name is None:
            name = self.default_name
            if name is None:
                if not self.ready:
                    raise ModelNotReady(self.not_ready_reason)
                served = ", ".join(e.name for e in self.entries() if e.serving is not None)
                raise ModelNotFound(
                    f"Name a model: DEFAULT_MODEL '{self._settings.default_model}' is not in "
                    f"MODELS_ROOT and more than one model is served ({served})."
                )
        entry = self.entry(name)
        serving = entry.serving
        if serving is None:
            if entry.on_disk and not entry.awaiting_load:  # every version on disk refused
                reasons = "; ".join(
                    f"version {version}: {refusal.reason}"
                    for version, refusal in sorted(entry.refused.items())
                )
                raise ModelNotReady(f"Model '{name}' has no loadable version ({reasons[:500]}).")
            raise ModelNotReady(f"Model '{name}' has no loaded version yet.")
        if version is None or version == serving.version:
            return serving
        if version in entry.on_disk:
            raise ModelNotFound(
                f"Version {version} of model '{name}' is not served; version {serving.version} "
                "is (the service serves each model's newest loadable version)."
            )
        raise ModelNotFound(
            f"Model '{name}' has no version {version}; it serves version {serving.version}."
        )

    def metadata(self, name: str, version: int | None = None) -> dict[str, Any]:
        """A version's metadata document (the serving version's when `version` is None).

        Raises:
            ModelNotFound: Unknown model or version, or unreadable metadata.
            ModelNotReady: No version given and none is served.
        """
        entry = self.entry(name)
        serving = entry.serving
        if version is None:
            if serving is None:
                raise ModelNotReady(f"Model '{name}' has no loaded version yet.")
            return serving.metadata
        if serving is not None and serving.version == version:
            return serving.metadata
        path = entry.on_disk.get(version)
        if path is None:
            raise ModelNotFound(f"Model '{name}' has no version {version}.")
        try:
            document = orjson.loads((path / METADATA_FILE).read_bytes())
        except (OSError, orjson.JSONDecodeError):
            document = None
        if not isinstance(document, dict):
            raise ModelNotFound(f"Version {version} of model '{name}' has no readable metadata.")
        return without_paths(document)
