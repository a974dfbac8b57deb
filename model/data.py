"""The digits data: scikit-learn's bundled 8x8 images and a fixed split.

No download happens at run time: :func:`sklearn.datasets.load_digits` reads a
file that ships inside scikit-learn.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

#: Seed of the train/held-out split. Fixed: every model and every benchmark
#: row is evaluated on the same held-out rows, whatever its training seed.
SPLIT_SEED = 20261125
#: Share of the data held out for evaluation.
HELD_OUT_SHARE = 0.25
#: Share of the training rows set aside for validation where a choice is made
#: (the benchmarks choose on it; the held-out rows only report).
VALIDATION_SHARE = 0.2
#: Number of input features (8x8 grey levels, row major).
NUM_INPUTS = 64
#: Largest grey level in scikit-learn's digits.
MAX_GREY_LEVEL = 16.0


_EMPTY_X = np.zeros((0, NUM_INPUTS), np.float32)
_EMPTY_Y = np.zeros((0,), np.int64)


@dataclass(frozen=True)
class DigitsSplit:
    """A stratified train/(validation/)held-out split of the digits.

    Attributes:
        x_train: float32 ``[n_train, 64]`` raw grey levels 0..16.
        y_train: int64 ``[n_train]`` digit labels 0..9.
        x_test: float32 ``[n_test, 64]`` held-out raw grey levels 0..16.
        y_test: int64 ``[n_test]`` held-out digit labels.
        x_val: float32 ``[n_val, 64]`` validation rows (taken from the
            training rows; empty unless asked for).
        y_val: int64 ``[n_val]`` their labels.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    x_val: np.ndarray = field(default_factory=lambda: _EMPTY_X)
    y_val: np.ndarray = field(default_factory=lambda: _EMPTY_Y)

    def validation(self) -> DigitsSplit:
        """The same split with the validation rows in the evaluation slots.

        Evaluating this (``model.evaluate.evaluate``) scores the validation
        rows; use it to choose, and the split itself to report.

        Raises:
            ValueError: When the split has no validation rows.
        """
        if len(self.y_val) == 0:
            raise ValueError(
                "This split has no validation rows (load_split(validation_share=...))."
            )
        return replace(self, x_test=self.x_val, y_test=self.y_val)


def load_split(
    seed: int = SPLIT_SEED,
    held_out_share: float = HELD_OUT_SHARE,
    validation_share: float = 0.0,
) -> DigitsSplit:
    """Loads the digits and splits them, stratified by label.

    The held-out rows do not depend on ``validation_share``: validation rows
    come out of the training rows.

    Args:
        seed: Seed of the split (default :data:`SPLIT_SEED`; keep it so that
            results are comparable).
        held_out_share: Fraction of rows held out (default 0.25).
        validation_share: Fraction of the training rows set aside for
            validation (default 0.0: none; the benchmarks use
            :data:`VALIDATION_SHARE`).

    Returns:
        The split, inputs as float32 raw grey levels (0..16).
    """
    digits = load_digits()
    x = digits.data.astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=held_out_share, random_state=seed, stratify=y
    )
    if validation_share <= 0.0:
        return DigitsSplit(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    x_train, x_val, y_train, y_val = train_test_split(
        x_train, y_train, test_size=validation_share, random_state=seed, stratify=y_train
    )
    return DigitsSplit(
        x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, x_val=x_val, y_val=y_val
    )


def binary_code(labels: np.ndarray, bits: int = 4) -> np.ndarray:
    """Encodes integer labels as binary codes, most significant bit first.

    Args:
        labels: Integer array ``[n]`` of non-negative labels below ``2**bits``.
        bits: Code length (default 4, enough for the ten digits).

    Returns:
        float32 ``[n, bits]`` of 0.0/1.0; e.g. 6 -> ``[0, 1, 1, 0]``.
    """
    labels = np.asarray(labels, dtype=np.int64)
    shifts = np.arange(bits - 1, -1, -1, dtype=np.int64)
    return ((labels[:, None] >> shifts[None, :]) & 1).astype(np.float32)


def base_code(labels: np.ndarray, base: int, digits: int) -> np.ndarray:
    """Encodes integer labels as base-``base`` digits, most significant first.

    Args:
        labels: Integer array ``[n]`` of non-negative labels below ``base**digits``.
        base: The base (>= 2); each digit is in ``0..base-1``.
        digits: Code length.

    Returns:
        float32 ``[n, digits]``; e.g. 9 in base 4 -> ``[2, 1]``.
    """
    labels = np.asarray(labels, dtype=np.int64)
    powers = base ** np.arange(digits - 1, -1, -1, dtype=np.int64)
    return ((labels[:, None] // powers[None, :]) % base).astype(np.float32)


def decode_base(codes: np.ndarray, base: int) -> np.ndarray:
    """Decodes base-``base`` digit codes (most significant first) into integers.

    Args:
        codes: Array ``[n, digits]`` of integer-valued digits.
        base: The base.

    Returns:
        int64 ``[n]``.
    """
    codes = np.rint(np.asarray(codes)).astype(np.int64)
    powers = base ** np.arange(codes.shape[1] - 1, -1, -1, dtype=np.int64)
    return (codes * powers[None, :]).sum(axis=1)


def decode_binary(codes: np.ndarray) -> np.ndarray:
    """Decodes 0/1 codes (most significant bit first) into integers.

    Args:
        codes: Array ``[n, bits]`` of 0/1 values.

    Returns:
        int64 ``[n]`` of the encoded integers.
    """
    codes = np.asarray(codes)
    bits = codes.shape[1]
    weights = 2 ** np.arange(bits - 1, -1, -1, dtype=np.int64)
    return (np.rint(codes).astype(np.int64) * weights[None, :]).sum(axis=1)
