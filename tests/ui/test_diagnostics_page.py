"""End-to-end test of the diagnostics page (/ui) in headless Chromium.

Each scenario runs ``python -m app`` as a real uvicorn process on 127.0.0.1 serving the
trained default model, drives Debian's ``/usr/bin/chromium`` with Playwright, and checks
what the page shows against what the HTTP API answers for the same input.

The screenshot ``docs/ui.png`` is rewritten only with ``UPDATE_SCREENSHOT=1``; otherwise it
goes to a temporary directory.
"""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
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
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
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


def _pick_example(page: Page, index: int, inputs: list[float]) -> None:
    page.get_by_test_id("example-select").select_option(str(index))
    _wait_for_run(page)
    shown = [float(v) for v in page.get_by_test_id("input-text").input_value().split(",")]
    assert shown == [float(v) for v in inputs]


def _number(text: str) -> float:
    """The leading number of a cell such as ``0.356`` or ``5.2e-4 (dead)``."""
    return float(text.split()[0].replace("\u2212", "-").lstrip("+"))


def _close(shown: float, expected: float) -> bool:
    # The page prints 3 decimals or 3 significant digits in exponent form.
    return math.isclose(shown, expected, rel_tol=1e-2, abs_tol=1e-3)


def _cell_colours(page: Page, testid: str) -> list[list[int]]:
    """The RGBA colour at the centre of each of the 8x8 cells of a canvas, row major."""
    return page.evaluate(
        """(testid) => {
            const c = document.querySelector(`[data-testid="${testid}"]`);
            const ctx = c.getContext("2d");
            const out = [];
            for (let i = 0; i < 64; i++) {
                const x = Math.floor(((i % 8) + 0.5) * c.width / 8);
                const y = Math.floor((Math.floor(i / 8) + 0.5) * c.height / 8);
                out.push(Array.from(ctx.getImageData(x, y, 1, 1).data));
            }
            return out;
        }""",
        testid,
    )


def _dark_pixels(page: Page, testid: str) -> int:
    return page.evaluate(
        """(testid) => {
            const c = document.querySelector(`[data-testid="${testid}"]`);
            const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
            let n = 0;
            for (let i = 0; i < d.length; i += 4) if (d[i + 3] > 0 && d[i] < 128) n++;
            return n;
        }""",
        testid,
    )


def _displayed_bits(page: Page) -> list[int]:
    return [int(t) for t in page.get_by_test_id("bit-hard").all_inner_texts()]


def test_page_shows_prediction_gradients_and_service_errors(
    default_models_root: Path, page: Page, tmp_path: Path
) -> None:
    with serve(default_models_root, tmp_path) as base:
        models = httpx.get(f"{base}/models", timeout=10).json()["models"]
        name = next(m["name"] for m in models if m["default"])
        meta = httpx.get(f"{base}/models/{name}", timeout=10).json()
        examples = meta["examples"]
        assert len(examples) >= 3
        index = 2
        inputs = examples[index]["inputs"]
        predicted = httpx.post(f"{base}/predict", json={"inputs": [inputs]}, timeout=30).json()
        grad = httpx.post(f"{base}/grad", json={"inputs": [inputs]}, timeout=30).json()
        bits = [int(b) for b in predicted["outputs"][0]]

        page.goto(f"{base}/ui")
        expect(page.get_by_test_id("model-select")).to_have_value(name)
        _pick_example(page, index, inputs)

        # The model's identity and the hard bits, as /predict gives them.
        expect(page.get_by_test_id("model-name")).to_have_text(meta["model_name"])
        expect(page.get_by_test_id("model-version")).to_have_text(str(predicted["version"]))
        expect(page.get_by_test_id("model-method")).to_have_text(meta["method"])
        assert _displayed_bits(page) == bits
        if predicted["decoded"] is not None and predicted["decoded"][0] is not None:
            expect(page.get_by_test_id("decoded-value")).to_have_text(str(predicted["decoded"][0]))
        assert _dark_pixels(page, "input-image") > 0

        # Per bit: pre-round, surrogate and local derivative as /grad gives them.
        k = len(bits)
        for column, key in [
            ("bit-pre", "pre_round"),
            ("bit-surrogate", "surrogate"),
            ("bit-local-grad", "local_grad"),
        ]:
            shown = [_number(t) for t in page.get_by_test_id(column).all_inner_texts()]
            assert len(shown) == k
            for s, e in zip(shown, grad[key][0], strict=True):
                assert _close(s, e), (column, shown, grad[key][0])
        summary = grad["summary"]
        assert _close(
            _number(page.get_by_test_id("surrogate-gap").inner_text()), summary["surrogate_gap"]
        )
        assert _close(
            _number(page.get_by_test_id("dead-share").inner_text()) / 100,
            summary["dead_gradient_share"],
        )
        assert _close(
            _number(page.get_by_test_id("max-grad").inner_text()), summary["max_abs_input_grad"]
        )

        # The surrogate plot: both curves drawn, one dot per bit in each panel.
        plot = page.get_by_test_id("surrogate-plot")
        for panel in ["curve-value", "curve-derivative"]:
            points = plot.locator(f'[data-testid="{panel}"] polyline.curve').get_attribute("points")
            assert len(points.split()) == len(meta["surrogate_curve"]["x"])
            expect(
                plot.locator(f'[data-testid="{panel}"] [data-testid="curve-point"]')
            ).to_have_count(k)

        # The heat map: drawn in colour, for the bit chosen, with its scale.
        chosen = max(range(k), key=lambda j: max(abs(v) for v in grad["input_grad"][0][j]))
        page.get_by_test_id("heatmap-bit").select_option(str(chosen))
        largest = max(abs(v) for v in grad["input_grad"][0][chosen])
        assert largest > 0
        # Each clearly non-zero cell is red where the gradient is positive, blue where negative.
        colours = _cell_colours(page, "heatmap")
        strong = 0
        for value, (r, _g, b, alpha) in zip(grad["input_grad"][0][chosen], colours, strict=True):
            assert alpha == 255
            if abs(value) > 0.3 * largest:
                strong += 1
                assert (r > b + 20) if value > 0 else (b > r + 20), (value, r, b)
        assert strong >= 1
        scale = page.get_by_test_id("heatmap-scale").inner_text().split()
        assert _close(_number(scale[-1]), largest)

        shot = (
            REPO_ROOT / "docs" / "ui.png"
            if os.environ.get("UPDATE_SCREENSHOT")
            else tmp_path / "ui.png"
        )
        page.screenshot(path=str(shot), full_page=True)
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

        # A bad pasted input: the service's own message is shown.
        bad = ", ".join(["1"] * 63)
        answer = httpx.post(
            f"{base}/predict", json={"inputs": [[1.0] * 63], "model": name}, timeout=10
        )
        assert answer.status_code == 422
        page.get_by_test_id("input-text").fill(bad)
        page.get_by_test_id("run").click()
        error = page.get_by_test_id("error")
        expect(error).to_be_visible()
        expect(error).to_have_text(answer.json()["error"])
        expect(page.get_by_test_id("bit-row")).to_have_count(0)


def test_page_asks_for_the_api_key_and_works_with_it(
    default_models_root: Path, page: Page, tmp_path: Path
) -> None:
    with serve(default_models_root, tmp_path, API_KEY=API_KEY) as base:
        refused = httpx.get(f"{base}/models", timeout=10)
        assert refused.status_code == 401
        headers = {"X-API-Key": API_KEY}
        meta = httpx.get(f"{base}/models/{_default_name(base, headers)}", headers=headers).json()
        inputs = meta["examples"][0]["inputs"]
        predicted = httpx.post(
            f"{base}/predict", json={"inputs": [inputs]}, headers=headers, timeout=30
        ).json()

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
        assert _displayed_bits(page) == [int(b) for b in predicted["outputs"][0]]
        expect(page.get_by_test_id("curve-point")).to_have_count(2 * len(predicted["outputs"][0]))
        assert page.evaluate("sessionStorage.getItem('diffround.apiKey')") == API_KEY


def test_page_says_grad_is_disabled_and_still_predicts(
    default_models_root: Path, page: Page, tmp_path: Path
) -> None:
    with serve(default_models_root, tmp_path, ENABLE_GRAD="false") as base:
        meta = httpx.get(f"{base}/models/{_default_name(base, {})}").json()
        inputs = meta["examples"][1]["inputs"]
        predicted = httpx.post(f"{base}/predict", json={"inputs": [inputs]}, timeout=30).json()
        disabled = httpx.post(f"{base}/grad", json={"inputs": [inputs]}, timeout=30)
        assert disabled.status_code == 404

        page.goto(f"{base}/ui")
        expect(page.get_by_test_id("example-select").locator("option")).to_have_count(
            len(meta["examples"]) + 1
        )
        _pick_example(page, 1, inputs)
        status = page.get_by_test_id("grad-status")
        expect(status).to_contain_text("Gradients are disabled")
        expect(status).to_contain_text(disabled.json()["error"])
        assert _displayed_bits(page) == [int(b) for b in predicted["outputs"][0]]
        expect(page.get_by_test_id("curve-point")).to_have_count(0)
        expect(page.get_by_test_id("error")).to_be_hidden()


def _default_name(base: str, headers: dict[str, str]) -> str:
    models = httpx.get(f"{base}/models", headers=headers, timeout=10).json()["models"]
    return next(m["name"] for m in models if m["default"])
