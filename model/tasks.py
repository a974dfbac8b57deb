"""The tasks: Keras models on the digits with a rounding layer inside.

Each task builds a network whose rounding happens *inside* the model, at the
place where the seed question needs it:

- ``digit-bits``: 64 grey levels -> dense net -> 4 sigmoid probabilities ->
  rounding -> the digit's 4-bit binary code (most significant bit first). The
  loss is the mean squared error of the *rounded* output against the code.
- ``digit-hash``: an autoencoder whose 16-bit bottleneck is rounded; the
  decoder reconstructs the 64 pixels from the hard code, so the encoder only
  learns through the rounding's surrogate gradient.
- ``digit-levels``: an 8x8x1 image -> a small conv net -> ``3 * sigmoid`` ->
  rounding -> two base-4 digits (0..3, most significant first) of the label:
  a multi-level integer code, not a binary one.

With ``rounding=None`` a task builds its unrounded float model, the float
reference of the benchmark (trained with the loss that suits it; not an upper
bound: rounding in the loss can do better).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from model.data import MAX_GREY_LEVEL, NUM_INPUTS, DigitsSplit, base_code, binary_code


@dataclass(frozen=True)
class TaskSpec:
    """What a task is, independent of the rounding method.

    Attributes:
        name: Task id (also the default model name).
        description: One line for the metadata.
        code_bits: Number of rounded values ``K`` per row (bits or digits).
        output_description: Meaning of the rounded output vector.
        bit_names: Meaning of each rounded value, in order.
        decoding: The metadata's ``decoding`` entry (``None`` for codes with no
            fixed meaning).
        primary_metric: Name of the hard-inference metric the benchmark ranks.
        higher_is_better: Whether a larger primary metric is better.
        rounding_name: Name of the rounding layer, which names the rounded
            output of the exported model.
        input_name: Name of the model's input.
        input_shape: Shape of one input row (the raw 64 grey levels reshaped).
        levels: Values a rounded element takes: the integers ``0..levels-1``.
    """

    name: str
    description: str
    code_bits: int
    output_description: str
    bit_names: tuple[str, ...]
    decoding: dict[str, Any] | None
    primary_metric: str
    higher_is_better: bool
    rounding_name: str = "bits"
    input_name: str = "inputs"
    input_shape: tuple[int, ...] = (NUM_INPUTS,)
    levels: int = 2


DIGIT_BITS = TaskSpec(
    name="digit-bits",
    description="8x8 digit image -> the digit's 4-bit binary code",
    code_bits=4,
    output_description="binary code of the digit, most significant bit first",
    bit_names=("bit 3 (8)", "bit 2 (4)", "bit 1 (2)", "bit 0 (1)"),
    decoding={"kind": "binary_msb_first", "classes": 10, "output": "bits"},
    primary_metric="exact_match",
    higher_is_better=True,
    rounding_name="bits",
)

DIGIT_HASH = TaskSpec(
    name="digit-hash",
    description="8x8 digit image -> 16-bit binary code of an autoencoder (semantic hash)",
    code_bits=16,
    output_description="16-bit code of the autoencoder's bottleneck (no fixed meaning per bit)",
    bit_names=tuple(f"code bit {i}" for i in range(16)),
    decoding=None,
    primary_metric="reconstruction_mse",
    higher_is_better=False,
    rounding_name="code",
)

#: Base of ``digit-levels``' code: each rounded value is a digit 0..3.
LEVELS_BASE = 4

DIGIT_LEVELS = TaskSpec(
    name="digit-levels",
    description="8x8x1 digit image -> the digit as two base-4 digits (0..3), conv net",
    code_bits=2,
    output_description="the digit in base 4, two digits 0..3, most significant first",
    bit_names=("digit 1 (x4)", "digit 0 (x1)"),
    decoding={"kind": "base_msb_first", "base": LEVELS_BASE, "classes": 10, "output": "levels"},
    primary_metric="exact_match",
    higher_is_better=True,
    rounding_name="levels",
    input_name="image",
    input_shape=(8, 8, 1),
    levels=LEVELS_BASE,
)

TASKS: dict[str, TaskSpec] = {spec.name: spec for spec in (DIGIT_BITS, DIGIT_HASH, DIGIT_LEVELS)}


@dataclass
class TaskModel:
    """The Keras pieces of one task instance.

    Attributes:
        spec: The task.
        train_model: The model ``fit`` trains (inputs -> training target).
        export_model: The model that is served: inputs -> the rounded code
            (named after the rounding layer), and for ``digit-hash`` also
            ``reconstruction`` (the decoder fed the code: the rounding sits in
            the middle of that path).
        encoder: Inputs -> pre-round values ``[batch, K]`` (in [0, 1], in
            [0, 3] for ``digit-levels``).
        rounding: The rounding layer (a ``diffround.DiffRound``), or ``None``
            for the float reference.
        decoder: Code -> reconstruction (``digit-hash`` only).
        hidden_units: Width of the hidden layers.
    """

    spec: TaskSpec
    train_model: keras.Model
    export_model: keras.Model
    encoder: keras.Model
    rounding: keras.layers.Layer | None
    decoder: keras.Model | None = None
    hidden_units: int = 0


def get_spec(name: str) -> TaskSpec:
    """Returns the task called ``name``.

    Raises:
        ValueError: For an unknown name, listing the valid ones.
    """
    if name not in TASKS:
        raise ValueError(f"Unknown task {name!r}. Expected one of: {', '.join(TASKS)}.")
    return TASKS[name]


def _encoder(spec: TaskSpec, hidden_units: int) -> keras.Model:
    inputs = keras.Input(shape=spec.input_shape, name=spec.input_name)
    # The model takes raw 0..16 grey levels (the serving contract) and rescales itself.
    x = keras.layers.Rescaling(1.0 / MAX_GREY_LEVEL, name="rescale")(inputs)
    if spec.name == DIGIT_LEVELS.name:
        x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv_1")(x)
        x = keras.layers.Conv2D(32, 3, strides=2, activation="relu", name="conv_2")(x)
        x = keras.layers.Flatten(name="flatten")(x)
        x = keras.layers.Dense(hidden_units, activation="relu", name="hidden")(x)
        x = keras.layers.Dense(spec.code_bits, activation="sigmoid", name="probabilities")(x)
        # levels - 1 times a sigmoid: values in (0, 3), rounded to the integers 0..3.
        pre_round = keras.layers.Rescaling(spec.levels - 1.0, name="pre_round")(x)
    else:
        x = keras.layers.Dense(hidden_units, activation="relu", name="hidden_1")(x)
        x = keras.layers.Dense(hidden_units, activation="relu", name="hidden_2")(x)
        pre_round = keras.layers.Dense(spec.code_bits, activation="sigmoid", name="pre_round")(x)
    return keras.Model(inputs, pre_round, name=f"{spec.name}-encoder")


def _decoder(code_bits: int, hidden_units: int) -> keras.Model:
    code = keras.Input(shape=(code_bits,), name="code")
    x = keras.layers.Dense(hidden_units, activation="relu", name="dec_hidden")(code)
    pixels = keras.layers.Dense(NUM_INPUTS, activation="sigmoid", name="pixels")(x)
    return keras.Model(code, pixels, name="reconstruction")


def build(
    spec: TaskSpec,
    rounding: keras.layers.Layer | None,
    hidden_units: int = 64,
    learning_rate: float = 3e-3,
) -> TaskModel:
    """Builds and compiles a task's models around a rounding layer.

    Args:
        spec: The task.
        rounding: A layer that rounds in inference and applies a surrogate in
            training (``diffround.DiffRound``); ``None`` builds the float
            reference (no rounding anywhere).
        hidden_units: Width of the hidden layers (default 64).
        learning_rate: Adam's learning rate (default 3e-3).

    Returns:
        The compiled :class:`TaskModel`; its ``train_model`` trains on
        :func:`targets`.
    """
    encoder = _encoder(spec, hidden_units)
    inputs = keras.Input(shape=spec.input_shape, name=spec.input_name)
    pre_round = encoder(inputs)
    code = rounding(pre_round) if rounding is not None else pre_round
    decoder = None
    if spec.name == DIGIT_HASH.name:
        decoder = _decoder(spec.code_bits, 2 * hidden_units)
        outputs = decoder(code)
        export_model = keras.Model(
            inputs, {spec.rounding_name: code, "reconstruction": outputs}, name=spec.name
        )
    else:
        outputs = code
    train_model = keras.Model(inputs, outputs, name=spec.name)
    if spec.name != DIGIT_HASH.name:
        export_model = train_model
    # Mean squared error on the rounded output: binary cross-entropy would clip
    # exact 0/1 values (straight-through forwards) and its clip has no gradient.
    # The float reference's bits are probabilities: cross-entropy suits them.
    loss = "binary_crossentropy" if rounding is None and spec.name == DIGIT_BITS.name else "mse"
    train_model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss)
    return TaskModel(
        spec=spec,
        train_model=train_model,
        export_model=export_model,
        encoder=encoder,
        rounding=rounding,
        decoder=decoder,
        hidden_units=hidden_units,
    )


def model_inputs(spec: TaskSpec, x: np.ndarray) -> np.ndarray:
    """Raw ``[n, 64]`` grey levels shaped as the task's input (``[n, 8, 8, 1]`` for levels)."""
    x = np.asarray(x, np.float32)
    return x.reshape((len(x), *spec.input_shape))


def code_targets(spec: TaskSpec, labels: np.ndarray) -> np.ndarray:
    """The code a labelled row should round to: its bits, or its base-4 digits.

    Args:
        spec: ``digit-bits`` or ``digit-levels``.
        labels: Digit labels ``[n]``.

    Returns:
        float32 ``[n, K]``.
    """
    if spec.levels == 2:
        return binary_code(labels, bits=spec.code_bits)
    return base_code(labels, base=spec.levels, digits=spec.code_bits)


def targets(spec: TaskSpec, x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The training targets of a task.

    Args:
        spec: The task.
        x: Raw inputs ``[n, 64]`` (0..16).
        labels: Digit labels ``[n]``.

    Returns:
        ``digit-bits``: the 4-bit codes; ``digit-levels``: the two base-4
        digits; ``digit-hash``: the pixels scaled to [0, 1].
    """
    if spec.name != DIGIT_HASH.name:
        return code_targets(spec, labels)
    return (np.asarray(x, np.float32) / MAX_GREY_LEVEL).astype(np.float32)


def fit(
    task_model: TaskModel,
    split: DigitsSplit,
    epochs: int,
    batch_size: int = 32,
    callbacks: list[keras.callbacks.Callback] | None = None,
    verbose: int | str = "auto",
) -> keras.callbacks.History:
    """Trains a task model on the split's training rows.

    Args:
        task_model: From :func:`build`.
        split: The data.
        epochs: Number of passes over the training rows.
        batch_size: Rows per step (default 32).
        callbacks: Keras callbacks (e.g. ``diffround.Annealer``).
        verbose: Passed to ``Model.fit`` (``"auto"``: a progress bar).

    Returns:
        The Keras history.
    """
    y = targets(task_model.spec, split.x_train, split.y_train)
    return task_model.train_model.fit(
        model_inputs(task_model.spec, split.x_train),
        y,
        epochs=epochs,
        batch_size=batch_size,
        callbacks=callbacks or [],
        verbose=verbose,
        shuffle=True,
    )
