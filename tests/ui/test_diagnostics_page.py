"""End-to-end test of the diagnostics page (/ui) in headless Chromium.

Each scenario runs ``python -m app`` as a real uvicorn process on 127.0.0.1, drives Debian's
``/usr/bin/chromium`` with Playwright, and checks what the page shows against what the HTTP
API answers for the same input, and the drawn curves against NumPy. The default model's
scenarios serve the trained default model; ``test_page_is_built_from_any_models_metadata``
serves a fresh ``diffround.export`` model (two named inputs, two rounding layers, an
image-shaped input without ``image_shape``) next to a plain Keras ``model.export()``.

The screenshot ``docs/ui.png`` is rewritten only with ``UPDATE_SCREENSHOT=1``; otherwise it
goes to a temporary directory.
"""

from __future__ import annotations

import math
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
API_KEY = "ui-test-key-7f3a"
TIMEOUT_MS = 30_000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serve(models_root: Path, log_dir: Path, **extra_env: str) -> Iterator[str]:
    """Runs ``python -m app`` on a free port until the block ends; yields its base URL."""
    port = _free_port()
    env = {
        k: v for k, v in os.environ.items() if k not in {"API_KEY", "ENABLE_GRAD", "DEFAULT_MODEL"}
    }
    env.update(
        HOST="127.0.0.1",
        PORT=str(port),
        MODELS_ROOT=str(models_root),
        TF_CPP_MIN_LOG_LEVEL="2",
        **extra_env,
    )
    log_path = log_dir / f"server-{port}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app"],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=log,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}:\n{log_path.read_text()}")
            try:
                # Ready once every model directory serves a version (the page lists them all).
                key = extra_env.get("API_KEY")
                headers = {"X-API-Key": key} if key else {}
                answer = httpx.get(f"{base}/models", headers=headers, timeout=2)
                models = answer.json().get("models", [])
                if models and all(m["ready"] for m in models):
                    break
            except (httpx.TransportError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready in 90 s:\n{log_path.read_text()[-4000:]}")
            time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).is_file(), "Debian's chromium is missing: run scripts/system-deps.sh"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture()
def page(browser: Browser) -> Iterator[Page]:
    # A fresh context per test: its own sessionStorage (the API key lives there).
    context = browser.new_context(viewport={"width": 1320, "height": 1100})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


def _wait_for_run(page: Page) -> None:
    expect(page.locator("main")).to_have_attribute("data-status", "done", timeout=TIMEOUT_MS)


def _field_numbers(page: Page, input_name: str) -> list[float]:
    """The numbers in one input's text field (row major, commas and new lines)."""
    text = page.locator(f'[data-testid="input-text"][data-input="{input_name}"]').input_value()
    return [float(v) for v in re.split(r"[\s,]+", text.strip())]


def _pick_example(page: Page, index: int, inputs: dict[str, list]) -> None:
    page.get_by_test_id("example-select").select_option(str(index))
    _wait_for_run(page)
    for name, value in inputs.items():
        assert _field_numbers(page, name) == np.ravel(value).tolist()


def _number(text: str) -> float:
    """The leading number of a cell such as ``0.356`` or ``5.2e-4 (dead)``."""
    return float(text.split()[0].replace("\u2212", "-").lstrip("+"))


def _close(shown: float, expected: float) -> bool:
    # The page prints 3 decimals or 3 significant digits in exponent form.
    return math.isclose(shown, expected, rel_tol=1e-2, abs_tol=1e-3)


def _cell_colours(page: Page, testid: str, h: int = 8, w: int = 8) -> list[list[int]]:
    """The RGBA colour at the centre of each of the h x w cells of a canvas, row major."""
    return page.evaluate(
        """([testid, h, w]) => {
            const c = document.querySelector(`[data-testid="${testid}"]`);
            const ctx = c.getContext("2d");
            const out = [];
            for (let i = 0; i < h * w; i++) {
                const x = Math.floor(((i % w) + 0.5) * c.width / w);
                const y = Math.floor((Math.floor(i / w) + 0.5) * c.height / h);
                out.push(Array.from(ctx.getImageData(x, y, 1, 1).data));
            }
            return out;
        }""",
        [testid, h, w],
    )


def _dark_pixels(page: Page, selector: str) -> int:
    return page.evaluate(
        """(selector) => {
            const c = document.querySelector(selector);
            const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
            let n = 0;
            for (let i = 0; i < d.length; i += 4) if (d[i + 3] > 0 && d[i] < 128) n++;
            return n;
        }""",
        selector,
    )


def _output_hard(page: Page, output: str) -> list[float]:
    block = page.locator(f'[data-testid="output-block"][data-output="{output}"]')
    return [_number(t) for t in block.get_by_test_id("output-hard").all_inner_texts()]


def _layer_column(page: Page, layer: str, column: str) -> list[float]:
    panel = page.locator(f'[data-testid="layer-panel"][data-layer="{layer}"]')
    return [_number(t) for t in panel.get_by_test_id(column).all_inner_texts()]


def _check_layer_panel(page: Page, name: str, layer: dict) -> None:
    """One rounding layer's table equals /grad's values; its dots lie on its drawn curve."""
    for column, key in [
        ("layer-hard", "hard"),
        ("layer-pre", "pre_round"),
        ("layer-surrogate", "surrogate"),
        ("layer-local-grad", "local_grad"),
    ]:
        shown = _layer_column(page, name, column)
        expected = np.ravel(layer[key][0]).tolist()
        assert len(shown) == len(expected), (name, column)
        for s, e in zip(shown, expected, strict=True):
            assert _close(s, e), (name, column, shown, expected)
    panel = page.locator(f'[data-testid="layer-panel"][data-layer="{name}"]')
    n = len(np.ravel(layer["pre_round"][0]))
    for part in ["curve-value", "curve-derivative"]:
        group = panel.locator(f'[data-testid="{part}"]')
        expect(group.get_by_test_id("curve-point")).to_have_count(n)
        # Every dot inside the drawn range sits on the drawn curve (within 4 px): the curve
        # is the layer's own surrogate, shifted along the grid where the values need it.
        points = group.locator("polyline.curve").get_attribute("points")
        curve = np.array([[float(v) for v in p.split(",")] for p in points.split()])
        dots = group.locator("circle.point:not(.outside)")
        assert dots.count() >= 1
        for i in range(dots.count()):
            cx = float(dots.nth(i).get_attribute("cx"))
            cy = float(dots.nth(i).get_attribute("cy"))
            assert np.hypot(curve[:, 0] - cx, curve[:, 1] - cy).min() < 4.0, (name, part, cx, cy)


def _check_heatmap(page: Page, jacobian_rows: np.ndarray, h: int = 8, w: int = 8) -> None:
    """The heat map shows one output element's Jacobian row: red > 0, blue < 0, its scale."""
    values = np.asarray(jacobian_rows, dtype=float).reshape(h * w, -1).sum(axis=1)
    largest = float(np.abs(values).max())
    assert largest > 0
    strong = 0
    for value, (r, _g, b, alpha) in zip(values, _cell_colours(page, "heatmap", h, w), strict=True):
        assert alpha == 255
        if abs(value) > 0.3 * largest:
            strong += 1
            assert (r > b + 20) if value > 0 else (b > r + 20), (value, r, b)
    assert strong >= 1
    scale = page.get_by_test_id("heatmap-scale").inner_text().split()
    assert _close(_number(scale[-1]), largest)


def test_page_shows_prediction_gradients_and_service_errors(
    default_models_root: Path, page: Page, tmp_path: Path
) -> None:
    with serve(default_models_root, tmp_path) as base:
        models = httpx.get(f"{base}/models", timeout=10).json()["models"]
        name = next(m["name"] for m in models if m["default"])
        meta = httpx.get(f"{base}/models/{name}", timeout=10).json()
        (input_spec,) = meta["inputs"]
        (output,) = meta["outputs"]
        (layer_meta,) = meta["rounding_layers"]
        examples = meta["examples"]
        assert len(examples) >= 3
        index = 2
        inputs = examples[index]["inputs"]
        body = {"model": name, "inputs": {k: [v] for k, v in inputs.items()}}
        predicted = httpx.post(f"{base}/predict", json=body, timeout=30).json()
        grad = httpx.post(f"{base}/grad", json=body, timeout=30).json()
        hard = predicted["outputs"][output["name"]][0]

        page.goto(f"{base}/ui")
        expect(page.get_by_test_id("model-select")).to_have_value(name)
        _pick_example(page, index, inputs)

        # The model's identity, one field per input (drawn: the metadata says it is an
        # image), and the hard outputs as /predict gives them.
        expect(page.get_by_test_id("model-name")).to_have_text(meta["model_name"])
        expect(page.get_by_test_id("model-version")).to_have_text(str(predicted["version"]))
        expect(page.get_by_test_id("model-layers")).to_contain_text(layer_meta["method"])
        expect(page.get_by_test_id("input-field")).to_have_count(1)
        assert _dark_pixels(page, '[data-testid="input-image"]') > 0
        assert _output_hard(page, output["name"]) == hard
        if predicted["decoded"] is not None and predicted["decoded"][0] is not None:
            expect(page.get_by_test_id("decoded-value")).to_have_text(str(predicted["decoded"][0]))
        relaxed = page.get_by_test_id("output-relaxed").all_inner_texts()
        for s, e in zip(relaxed, grad["outputs"][output["name"]]["relaxed"][0], strict=True):
            assert _close(_number(s), e)

        # One panel for the one rounding layer, equal to /grad's, dots on its curve.
        expect(page.get_by_test_id("layer-panel")).to_have_count(1)
        _check_layer_panel(page, layer_meta["name"], grad["rounding_layers"][layer_meta["name"]])

        summary = grad["summary"]
        assert _close(
            _number(page.get_by_test_id("surrogate-gap").inner_text()), summary["surrogate_gap"]
        )
        assert _close(
            _number(page.get_by_test_id("dead-share").inner_text()) / 100,
            summary["dead_gradient_share"],
        )
        assert _close(
            _number(page.get_by_test_id("max-grad").inner_text()), summary["max_abs_jacobian"]
        )

        # The heat map: drawn in colour, for the output element chosen, with its scale.
        jacobian = np.asarray(grad["outputs"][output["name"]]["jacobians"][input_spec["name"]][0])
        chosen = int(np.abs(jacobian.reshape(len(hard), -1)).max(axis=1).argmax())
        page.get_by_test_id("heatmap-output").select_option(f"{output['name']}|{chosen}")
        _check_heatmap(page, jacobian[chosen])

        shot = (
            REPO_ROOT / "docs" / "ui.png"
            if os.environ.get("UPDATE_SCREENSHOT")
            else tmp_path / "ui.png"
        )
        page.screenshot(path=str(shot), full_page=True)
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

        # A bad typed input: the service's own message is shown.
        answer = httpx.post(
            f"{base}/predict",
            json={"model": name, "inputs": {input_spec["name"]: [[1.0] * 63]}},
            timeout=10,
        )
        assert answer.status_code == 422
        page.get_by_test_id("input-text").fill(", ".join(["1"] * 63))
        page.get_by_test_id("run").click()
        error = page.get_by_test_id("error")
        expect(error).to_be_visible()
        expect(error).to_have_text(answer.json()["error"])
        expect(page.get_by_test_id("output-row")).to_have_count(0)


def test_page_asks_for_the_api_key_and_works_with_it(
    default_models_root: Path, page: Page, tmp_path: Path
) -> None:
    with serve(default_models_root, tmp_path, API_KEY=API_KEY) as base:
        refused = httpx.get(f"{base}/models", timeout=10)
        assert refused.status_code == 401
        headers = {"X-API-Key": API_KEY}
        name = _default_name(base, headers)
        meta = httpx.get(f"{base}/models/{name}", headers=headers).json()
        inputs = meta["examples"][0]["inputs"]
        body = {"model": name, "inputs": {k: [v] for k, v in inputs.items()}}
        predicted = httpx.post(f"{base}/predict", json=body, headers=headers, timeout=30).json()
        (output,) = predicted["outputs"]

        page.goto(f"{base}/ui")
        key_section = page.get_by_test_id("key-section")
        expect(key_section).to_be_visible()
        expect(page.get_by_test_id("key-reason")).to_contain_text(refused.json()["error"])

        page.get_by_test_id("api-key-input").fill("wrong-key")
        page.get_by_test_id("api-key-submit").click()
        expect(key_section).to_be_visible()
        expect(page.get_by_test_id("key-reason")).to_contain_text("refused the stored key")

        page.get_by_test_id("api-key-input").fill(API_KEY)
        page.get_by_test_id("api-key-submit").click()
        _wait_for_run(page)
        expect(key_section).to_be_hidden()
        hard = predicted["outputs"][output][0]
        assert _output_hard(page, output) == hard
        expect(page.get_by_test_id("curve-point")).to_have_count(2 * len(hard))
        assert page.evaluate("sessionStorage.getItem('diffround.apiKey')") == API_KEY


def test_page_says_grad_is_disabled_and_still_predicts(
    default_models_root: Path, page: Page, tmp_path: Path
) -> None:
    with serve(default_models_root, tmp_path, ENABLE_GRAD="false") as base:
        name = _default_name(base, {})
        meta = httpx.get(f"{base}/models/{name}").json()
        inputs = meta["examples"][1]["inputs"]
        body = {"model": name, "inputs": {k: [v] for k, v in inputs.items()}}
        predicted = httpx.post(f"{base}/predict", json=body, timeout=30).json()
        disabled = httpx.post(f"{base}/grad", json=body, timeout=30)
        assert disabled.status_code == 404
        (output,) = predicted["outputs"]

        page.goto(f"{base}/ui")
        expect(page.get_by_test_id("example-select").locator("option")).to_have_count(
            len(meta["examples"]) + 1
        )
        _pick_example(page, 1, inputs)
        status = page.get_by_test_id("grad-status")
        expect(status).to_contain_text("Gradients are disabled")
        expect(status).to_contain_text(disabled.json()["error"])
        assert _output_hard(page, output) == predicted["outputs"][output][0]
        # The layer panel still draws the layer's curve from the metadata, without dots.
        expect(page.get_by_test_id("layer-panel")).to_have_count(1)
        expect(page.get_by_test_id("curve-point")).to_have_count(0)
        expect(page.get_by_test_id("error")).to_be_hidden()


def _default_name(base: str, headers: dict[str, str]) -> str:
    models = httpx.get(f"{base}/models", headers=headers, timeout=10).json()["models"]
    return next(m["name"] for m in models if m["default"])


# ---- any model: a fresh diffround.export model and a plain SavedModel -------------------

OWN = "own-model"
PLAIN = "plain-keras"


def _own_model():
    """Two named inputs (an 8x8x1 image, a 3-vector), rounding in the middle (4 bits, STE)
    and at the output (two levels 0..3, sine), and a float output."""
    import keras

    import diffround

    keras.utils.set_random_seed(0)
    image = keras.Input((8, 8, 1), name="image")
    meta = keras.Input((3,), name="meta")
    h = keras.layers.Conv2D(4, 3, activation="tanh")(keras.layers.Rescaling(1 / 16)(image))
    h = keras.layers.Dense(4, activation="sigmoid")(keras.layers.Flatten()(h))
    bits = diffround.DiffRound("ste", name="mid_bits")(h)
    joined = keras.layers.Concatenate()([bits, meta])
    levels = keras.layers.Rescaling(3.0)(keras.layers.Dense(2, activation="sigmoid")(joined))
    levels = diffround.DiffRound("sine", name="levels", min_value=0.0, max_value=3.0)(levels)
    score = keras.layers.Dense(1, name="score")(joined)
    return keras.Model({"image": image, "meta": meta}, {"levels": levels, "score": score})


def _plain_model():
    import keras

    image = keras.Input((8, 8, 1), name="image")
    extra = keras.Input((3,), name="extra")
    joined = keras.layers.Concatenate()([keras.layers.Flatten()(image), extra])
    return keras.Model(
        {"image": image, "extra": extra},
        [keras.layers.Dense(2)(joined), keras.layers.Dense(1, bias_initializer="ones")(joined)],
    )


@pytest.fixture(scope="module")
def any_models_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models root with a fresh `diffround.export` model and a plain Keras export."""
    import diffround

    root = tmp_path_factory.mktemp("ui-any-models")
    rng = np.random.default_rng(0)
    examples = [
        {
            "inputs": {
                "image": rng.integers(0, 17, (8, 8, 1)).astype(np.float32),
                "meta": rng.normal(size=3).astype(np.float32),
            }
        }
        for _ in range(2)
    ]
    # No `image_shape`: the page must tell the image from its [8, 8, 1] shape alone.
    diffround.export(
        _own_model(),
        root / OWN / "1",
        description="two inputs, two rounding layers",
        examples=examples,
        input_info={"image": {"range": [0.0, 16.0]}},
    )
    _plain_model().export(str(root / PLAIN / "1"), verbose=False)
    return root


def test_page_is_built_from_any_models_metadata(
    any_models_root: Path, page: Page, tmp_path: Path
) -> None:
    with serve(any_models_root, tmp_path, DEFAULT_MODEL=OWN) as base:
        meta = httpx.get(f"{base}/models/{OWN}", timeout=10).json()
        example = meta["examples"][0]["inputs"]

        page.goto(f"{base}/ui")
        expect(page.get_by_test_id("model-select")).to_have_value(OWN)
        _wait_for_run(page)

        # One field per input; only the image-shaped one is drawn (and it is drawn dark
        # where the example has ink).
        fields = page.get_by_test_id("input-field")
        expect(fields).to_have_count(2)
        assert sorted(fields.evaluate_all("els => els.map(e => e.dataset.input)")) == [
            "image",
            "meta",
        ]
        images = page.get_by_test_id("input-image")
        expect(images).to_have_count(1)
        expect(images).to_have_attribute("data-input", "image")
        for name, value in example.items():
            assert _field_numbers(page, name) == pytest.approx(np.ravel(value).tolist())

        # Paint one cell of the image (to the range's top, 16), then run the edited input.
        canvas = images.first
        box = canvas.bounding_box()
        assert box is not None
        row, col = 2, 5
        canvas.click(
            position={"x": (col + 0.5) * box["width"] / 8, "y": (row + 0.5) * box["height"] / 8}
        )
        edited = np.asarray(_field_numbers(page, "image"))
        expected_image = np.ravel(example["image"]).copy()
        expected_image[row * 8 + col] = 16.0
        np.testing.assert_array_equal(edited, expected_image)
        page.get_by_test_id("run").click()
        _wait_for_run(page)
        inputs = {
            "image": [expected_image.reshape(8, 8, 1).tolist()],
            "meta": [np.ravel(example["meta"]).tolist()],
        }
        body = {"model": OWN, "inputs": inputs}
        predicted = httpx.post(f"{base}/predict", json=body, timeout=30).json()
        grad = httpx.post(f"{base}/grad", json=body, timeout=30).json()

        # Every output, as /predict answers it.
        expect(page.get_by_test_id("output-block")).to_have_count(2)
        assert _output_hard(page, "levels") == predicted["outputs"]["levels"][0]
        for s, e in zip(_output_hard(page, "score"), predicted["outputs"]["score"][0], strict=True):
            assert _close(s, e)

        # One panel per rounding layer, each equal to /grad, with NumPy's references: STE's
        # hard value is round(pre-round), the sine surrogate is x - sin(2 pi x) / (2 pi).
        panels = page.get_by_test_id("layer-panel")
        expect(panels).to_have_count(2)
        assert sorted(panels.evaluate_all("els => els.map(e => e.dataset.layer)")) == [
            "levels",
            "mid_bits",
        ]
        for name in ["mid_bits", "levels"]:
            _check_layer_panel(page, name, grad["rounding_layers"][name])
        mid_pre = np.asarray(grad["rounding_layers"]["mid_bits"]["pre_round"][0])
        assert _layer_column(page, "mid_bits", "layer-hard") == np.round(mid_pre).tolist()
        pre = np.asarray(_layer_column(page, "levels", "layer-pre"))
        sine = pre - np.sin(2 * np.pi * pre) / (2 * np.pi)
        np.testing.assert_allclose(
            _layer_column(page, "levels", "layer-surrogate"), sine, atol=2e-3
        )

        # The heat map: d levels[k] / d image for the element picked, summed over the channel.
        jacobian = np.asarray(grad["outputs"]["levels"]["jacobians"]["image"][0])  # [2, 8, 8, 1]
        expect(page.get_by_test_id("heatmap-input")).to_have_value("image")
        k = int(np.abs(jacobian.reshape(2, -1)).max(axis=1).argmax())
        page.get_by_test_id("heatmap-output").select_option(f"levels|{k}")
        _check_heatmap(page, jacobian[k])

        # A bad row for the vector input: the service's message is shown.
        bad = {"model": OWN, "inputs": {**inputs, "meta": [[1.0, 2.0]]}}
        answer = httpx.post(f"{base}/predict", json=bad, timeout=10)
        assert answer.status_code in (400, 422)
        page.locator('[data-testid="input-text"][data-input="meta"]').fill("1, 2")
        page.get_by_test_id("run").click()
        expect(page.get_by_test_id("error")).to_have_text(answer.json()["error"])

        # The plain SavedModel: inputs from its signature, predictions only, and why.
        page.get_by_test_id("model-select").select_option(PLAIN)
        _wait_for_run(page)
        expect(page.get_by_test_id("error")).to_be_hidden()
        expect(page.get_by_test_id("model-kind")).to_contain_text("plain SavedModel")
        expect(page.get_by_test_id("input-field")).to_have_count(2)
        expect(page.get_by_test_id("input-image")).to_have_attribute("data-input", "image")
        zeros = {"image": [np.zeros((8, 8, 1)).tolist()], "extra": [[0.0, 0.0, 0.0]]}
        plain_body = {"model": PLAIN, "inputs": zeros}
        plain = httpx.post(f"{base}/predict", json=plain_body, timeout=30).json()
        refused = httpx.post(f"{base}/grad", json=plain_body, timeout=30)
        assert refused.status_code == 404
        for name, value in plain["outputs"].items():
            for s, e in zip(_output_hard(page, name), value[0], strict=True):
                assert _close(s, e)
        status = page.get_by_test_id("grad-status")
        expect(status).to_contain_text("This model has no gradients")
        expect(status).to_contain_text(refused.json()["error"])
        expect(page.get_by_test_id("layer-panel")).to_have_count(0)
        expect(page.get_by_test_id("layers-none")).to_be_visible()
        expect(page.get_by_test_id("heatmap-figure")).to_be_hidden()
