"""Draws every rounding surrogate and its derivative on [-1.5, 1.5] (PNG).

Usage: `python -m model.plot_surrogates --out docs/surrogates.png`. It lives
in `model/` because `diffround/` does no file I/O.
"""

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np

import diffround

X_RANGE = (-1.5, 1.5)
Y_LIMITS = (-2.0, 3.5)
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


def draw(out: Path, points: int = 3001, dpi: int = 110) -> Path:
    """Draws the figure and writes it to `out`.

    Args:
        out: PNG path (parent directories are created).
        points: Samples on [-1.5, 1.5].
        dpi: Resolution.

    Returns:
        The written path.
    """
    x = np.linspace(*X_RANGE, points, dtype=np.float32)
    hard = np.round(x)
    fig, axes = plt.subplots(3, 4, figsize=(16, 10.5), sharex=True)
    for ax, method in zip(axes.flat, diffround.METHODS, strict=False):
        surrogate = diffround.get(method)
        value, grad = (np.asarray(t) for t in diffround.local_gradient(x, surrogate))
        peak = float(np.max(np.abs(grad)))
        ax.plot(x, hard, color="0.75", lw=2.5, label="round(x)")
        ax.plot(x, value, color="tab:blue", lw=1.6, label="forward (relaxed)")
        ax.plot(
            x, np.clip(grad, *Y_LIMITS), color="tab:orange", lw=1.2, ls="--", label="derivative"
        )
        title = _label(method, surrogate.params)
        if method in ("noise", "binary_concrete"):
            title += "\nnoise at its mean"
        ax.set_title(f"{title}\nmax |derivative| = {peak:.3g}", fontsize=9)
    ax = axes.flat[-1]
    ax.plot(x, hard, color="0.75", lw=2.5)
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
    for ax in axes.flat:
        ax.set_ylim(*Y_LIMITS)
        ax.set_xlim(*X_RANGE)
        ax.axhline(0, color="0.85", lw=0.6)
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=7, loc="upper left")
    fig.suptitle("diffround: training-time forward (blue) and its derivative (orange) vs round")
    fig.tight_layout()
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
