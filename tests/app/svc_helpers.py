"""Helpers for the service tests: settings, an app with its lifespan entered, reference answers.

Imported by name (`from svc_helpers import ...`): a uniquely named module, so
that no other test directory's `conftest` can shadow it.
"""

import asyncio
import functools
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import numpy as np
import tensorflow as tf

from app.config import Settings
from app.main import create_app


def save_serving_modules(root: Path, modules: dict[str, tf.Module]) -> Path:
    """Each `tf.Module` as version 1 of the model of its name, its `serve` as `serving_default`."""
    for name, module in modules.items():
        tf.saved_model.save(
            module, str(root / name / "1"), signatures={"serving_default": module.serve}
        )
    return root


def make_settings(models_root: Path, **overrides: object) -> Settings:
    """Test settings: a fast poller, the given root, everything else at the contract's defaults."""
    values: dict[str, object] = {
        "models_root": models_root,
        "poll_interval_s": 0.2,
        "api_key": None,
        "default_model": "digit-bits",
        # Converting to TFLite costs about a second a load, freezing a graph half of one;
        # the runtime tests and the real-server tests (test_app_server, tests/reliability)
        # run the defaults (auto, and graph for `grad`).
        "runtime": "savedmodel",
        "grad_runtime": "savedmodel",
    }
    values.update(overrides)
    return Settings(**values)


@asynccontextmanager
async def serving(
    settings: Settings, *, wait_ready: bool = True
) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan entered, and an httpx client talking ASGI to it."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        if wait_ready:
            assert await app.state.repository.wait_ready(60), "service never became ready"
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


async def wait_for_model(client: httpx.AsyncClient, name: str, timeout_s: float = 60.0) -> None:
    """Wait until the repository serves a version of `name` (others may load first)."""
    repository = client.app.state.repository  # type: ignore[attr-defined]
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        entries = {entry.name: entry for entry in repository.entries()}
        if name in entries and entries[name].serving is not None:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"model {name} was never served")


def reference_outputs(version_dir: Path, rows: np.ndarray) -> dict[str, np.ndarray]:
    """The SavedModel's own answers, loaded in this process with `tf.saved_model.load`.

    For a one-input, one-output model (the tiny models and the default model).

    Returns:
        `outputs` (serving_default's only output), every `grad` key, and the grad
        values of the first output and first rounding layer by role (from the
        metadata's grad map): `relaxed`, `input_grad` (the Jacobian), `pre_round`,
        `surrogate`, `local_grad`, `hard`.
    """
    loaded = _loaded(str(version_dir))
    x = tf.constant(rows, tf.float32)
    (served,) = loaded.signatures["serving_default"](inputs=x).values()
    result = {"outputs": served.numpy()}
    metadata_file = version_dir / "assets.extra" / "diffround.json"
    if "grad" in loaded.signatures and metadata_file.exists():
        grads = {k: v.numpy() for k, v in loaded.signatures["grad"](inputs=x).items()}
        result.update(grads)
        grad_map = json.loads(metadata_file.read_text())["grad"]
        (output,) = grad_map["outputs"].values()
        result["relaxed"] = grads[output["relaxed"]]
        if output["jacobians"]:
            (result["input_grad"],) = (grads[k] for k in output["jacobians"].values())
        layer = next(iter(grad_map["layers"].values()))
        result.update({role: grads[key] for role, key in layer.items()})
    return result


def predicted(body: dict) -> np.ndarray:
    """The only output of a one-output model in a `/predict` answer."""
    (values,) = body["outputs"].values()
    return np.array(values)


def grad_view(body: dict) -> dict:
    """A `/grad` answer of a one-output model by role (its first rounding layer's values)."""
    (output,) = body["outputs"].values()
    layer = next(iter(body["rounding_layers"].values()))
    return {
        "hard": layer["hard"],
        "output_hard": output["hard"],
        "relaxed": output["relaxed"],
        "input_grad": next(iter(output["jacobians"].values())),
        "surrogate": layer["surrogate"],
        "pre_round": layer["pre_round"],
        "local_grad": layer["local_grad"],
        "method": layer["method"],
        "params": layer["params"],
        "summary": body["summary"],
    }


@functools.lru_cache(maxsize=8)
def _loaded(path: str):
    return tf.saved_model.load(path)


def digit_rows(n: int, seed: int) -> np.ndarray:
    """`n` random rows of 64 grey levels 0..16 (float32)."""
    return np.random.default_rng(seed).integers(0, 17, (n, 64)).astype(np.float32)


def tf1_graph_export(path: Path, *, declared_shape: list[int | None] | None, matmul: bool) -> None:
    """A TF1 graph export (TF Serving's classic models): `y = 0.5 x + 2` (half_plus_two), or
    `y = x @ [[1], [2]]`; input `x` declared `declared_shape` (None: unknown rank)."""
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, declared_shape, name="x")
        if matmul:
            y = tf.matmul(x, tf.constant([[1.0], [2.0]]), name="y")
        else:
            a, b = tf.Variable(0.5, name="a"), tf.Variable(2.0, name="b")
            y = tf.add(a * x, b, name="y")
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            builder = tf.compat.v1.saved_model.Builder(str(path))
            signature = tf.compat.v1.saved_model.predict_signature_def({"x": x}, {"y": y})
            builder.add_meta_graph_and_variables(
                session, ["serve"], signature_def_map={"serving_default": signature}
            )
            builder.save()


class ErfcWithGradient(tf.Module):
    """`serve` (`y = 2x + 1`, TFLite runs it) and a `grad` signature TFLite cannot run even
    with its gradient ops rewritten: Erfc has no TFLite kernel and no rewrite."""

    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
    def serve(self, x):
        return {"y": 2.0 * x + 1.0}

    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
    def grad(self, x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.reduce_sum(tf.math.erfc(tf.nn.relu(x)), axis=1)
        return {"y": y, "dy_dx": tape.gradient(y, x)}
