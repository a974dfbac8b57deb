"""Draws every surrogate in `diffround.METHODS` and its derivative on [-1.5, 1.5] (PNG).

One panel per method, each over its own exact forward (`diffround.exact`:
`round(x)` for the rounding methods, the sign, Heaviside or ternary step for
the others), and a last panel with the seed thread's constants. The grid of
panels grows with the registry.

Usage: `python -m model.plot_surrogates --out docs/surrogates.png`. It lives
in `model/` because `diffround/` does no file I/O.
"""

import argparse
import math
from pathlib import Path

import matplotlib
import matplotlib.figure

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np

import diffround
from diffround.registry import get_spec

X_RANGE = (-1.5, 1.5)
Y_LIMITS = (-2.0, 3.5)
COLUMNS = 4
# The seed thread's own constants, drawn in the last panel.
SEED_CONSTANTS = [
    ("clamp", {"threshold": 0.499, "slope": 1e4}),
    ("sigmoid", {"slope": 1000.0}),
    ("fourier", {"terms": 5}),
]


def _label(method: str, params: dict) -> str:
    shown = ", ".join(
        f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
    )
    return f"{method}({shown})" if shown else method


def figure(points: int = 3001) -> matplotlib.figure.Figure:
    """The figure: a panel per method in `diffround.METHODS`, then the seed constants.

    Args:
        points: Samples on [-1.5, 1.5].

    Returns:
        The figure (unused trailing cells of the grid are hidden).
    """
    x = np.linspace(*X_RANGE, points, dtype=np.float32)
    methods = diffround.METHODS
    rows = math.ceil((len(methods) + 1) / COLUMNS)
    fig, axes = plt.subplots(rows, COLUMNS, figsize=(16, 3.5 * rows), sharex=True)
    cells = list(axes.flat)
    for ax, method in zip(cells, methods, strict=False):
        surrogate = diffround.get(method)
        value, grad = (np.asarray(t) for t in diffround.local_gradient(x, surrogate))
        hard = np.asarray(diffround.exact(x, method, **surrogate.params))
        peak = float(np.max(np.abs(grad)))
        ax.plot(x, hard, color="0.75", lw=2.5, label="exact forward")
        ax.plot(x, value, color="tab:blue", lw=1.6, label="forward (relaxed)")
        ax.plot(
            x, np.clip(grad, *Y_LIMITS), color="tab:orange", lw=1.2, ls="--", label="derivative"
        )
        title = _label(method, surrogate.params)
        if get_spec(method).stochastic:
            title += "\nnoise at its mean"
        ax.set_title(f"{title}\nmax |derivative| = {peak:.3g}", fontsize=9)
    ax = cells[len(methods)]
    ax.plot(x, np.round(x), color="0.75", lw=2.5)
    for (method, params), color in zip(
        SEED_CONSTANTS, ("tab:red", "tab:green", "tab:purple"), strict=True
    ):
        value, grad = (np.asarray(t) for t in diffround.local_gradient(x, method, **params))
        ax.plot(x, value, color=color, lw=1.4, label=_label(method, params))
        ax.plot(x, np.clip(grad, *Y_LIMITS), color=color, lw=1.0, ls="--")
    ax.set_title(
        "the seed thread's constants\n(derivatives dashed, clipped to the axes)", fontsize=9
    )
    ax.legend(fontsize=7, loc="upper left")
    for ax in cells[: len(methods) + 1]:
        ax.set_ylim(*Y_LIMITS)
        ax.set_xlim(*X_RANGE)
        ax.axhline(0, color="0.85", lw=0.6)
        ax.grid(alpha=0.3)
    for ax in cells[len(methods) + 1 :]:
        ax.set_visible(False)
    cells[0].legend(fontsize=7, loc="upper left")
    fig.suptitle("diffround: training-time forward (blue) and its derivative (orange) vs exact")
    fig.tight_layout()
    return fig


def draw(out: Path, points: int = 3001, dpi: int = 110) -> Path:
    """Draws the figure and writes it to `out`.

    Args:
        out: PNG path (parent directories are created).
        points: Samples on [-1.5, 1.5].
        dpi: Resolution.

    Returns:
        The written path.
    """
    fig = figure(points)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/surrogates.png"))
    parser.add_argument("--dpi", type=int, default=110)
    args = parser.parse_args(argv)
    print(draw(args.out, dpi=args.dpi))


if __name__ == "__main__":
    main()
