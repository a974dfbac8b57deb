"""The default model, trained by the Makefile's `make train` command (shared fixture)."""

import numpy as np
import tensorflow as tf

from model.data import binary_code, decode_binary, load_split
from model.export import read_metadata
from model.metrics import exact_match

ACCURACY_BAR = 0.90


def test_default_model_is_trained_by_the_make_train_command(default_model_dir, default_train_args):
    meta = read_metadata(default_model_dir)
    command = meta["training"]["command"]
    assert command.startswith("python -m model.train " + " ".join(default_train_args))
    method = default_train_args[default_train_args.index("--method") + 1]
    assert [layer["method"] for layer in meta["rounding_layers"]] == [method]
    assert meta["task"] == "digit-bits" and meta["version"] == 1
    assert meta["format"] == "diffround.savedmodel/v2"
    # "Well under a minute on 2 cores" for the fit itself.
    assert meta["training"]["train_seconds"] < 45


def test_default_model_reaches_the_exact_match_bar_with_hard_inference(default_model_dir):
    meta = read_metadata(default_model_dir)
    assert meta["metrics"]["exact_match"] >= ACCURACY_BAR
    # Recomputed from the held-out digits through the SavedModel's serving signature.
    split = load_split()
    serve = tf.saved_model.load(str(default_model_dir)).signatures["serving_default"]
    outputs = serve(inputs=tf.constant(split.x_test))["bits"].numpy()
    assert set(np.unique(outputs)) <= {0.0, 1.0}
    recomputed = exact_match(outputs, binary_code(split.y_test))
    assert recomputed >= ACCURACY_BAR
    assert recomputed == meta["metrics"]["exact_match"]
    assert np.mean(decode_binary(outputs) == split.y_test) == recomputed
