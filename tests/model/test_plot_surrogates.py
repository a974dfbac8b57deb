"""The surrogate figure: one panel per registered method, each over its own exact forward."""

import matplotlib.pyplot as plt
import numpy as np
import pytest

import diffround
from diffround.registry import get_spec
from model import plot_surrogates


@pytest.fixture(scope="module")
def panels():
    fig = plot_surrogates.figure(points=301)
    yield [ax for ax in fig.axes if ax.get_visible()]
    plt.close(fig)


def test_every_method_has_one_panel_in_registry_order_then_the_seed_panel(panels):
    titles = [ax.get_title().split("\n")[0] for ax in panels]
    assert len(titles) == len(diffround.METHODS) + 1
    # A method's title is its name, with its parameters in brackets when it has some.
    names = [title.split("(")[0] for title in titles[:-1]]
    assert names == list(diffround.METHODS)
    assert titles[-1] == "the seed thread's constants"


def _independent_exact(codes: str, x: np.ndarray) -> np.ndarray:
    if codes == "integers":
        return np.round(x)  # half to even, as tf.round
    if codes == "sign":
        return np.where(x >= 0, 1.0, -1.0)
    if codes == "binary":
        return (x > 0).astype(np.float64)
    raise AssertionError(codes)


@pytest.mark.parametrize("method", diffround.METHODS)
def test_each_panel_draws_the_methods_exact_forward(panels, method):
    ax = panels[diffround.METHODS.index(method)]
    exact_line, relaxed_line = ax.lines[0], ax.lines[1]
    x = np.asarray(exact_line.get_xdata(), np.float64)
    hard = np.asarray(exact_line.get_ydata(), np.float64)
    codes = get_spec(method).codes
    if codes == "ternary":
        # {-1, 0, +1}: the sign away from a threshold below 0.5 around zero.
        assert set(np.unique(hard)) <= {-1.0, 0.0, 1.0}
        far = np.abs(x) > 0.5
        np.testing.assert_array_equal(hard[far], np.sign(x[far]))
        assert np.all(hard[np.abs(x) < 1e-3] == 0.0)
    else:
        np.testing.assert_array_equal(hard, _independent_exact(codes, x))
    relaxed = np.asarray(relaxed_line.get_ydata(), np.float64)
    assert relaxed.shape == x.shape and np.all(np.isfinite(relaxed))


def test_draw_writes_a_png(tmp_path):
    out = plot_surrogates.draw(tmp_path / "sub" / "surrogates.png", points=101, dpi=30)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
