"""Training through the rounding layer, and the training command."""

import argparse
import hashlib
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import diffround
from model import tasks, train
from model.data import load_split
from model.export import read_metadata


@pytest.fixture(scope="module")
def split():
    return load_split()


@pytest.mark.parametrize("task", sorted(tasks.TASKS))
@pytest.mark.parametrize("method", ["ste", "soft_round", None])
def test_a_few_training_steps_move_the_encoder_through_the_rounding(task, method, split):
    keras.utils.set_random_seed(0)
    rounding = diffround.DiffRound(method) if method else None
    task_model = tasks.build(tasks.get_spec(task), rounding)
    before = [np.array(w) for w in task_model.encoder.trainable_weights]
    x, y = split.x_train[:128], split.y_train[:128]
    history = task_model.train_model.fit(
        tasks.model_inputs(task_model.spec, x),
        tasks.targets(task_model.spec, x, y),
        epochs=1,
        batch_size=32,
        verbose=0,
    )
    assert np.isfinite(history.history["loss"][0])
    after = task_model.encoder.trainable_weights
    # The encoder sits before the rounding: it only learns through the surrogate gradient.
    assert all(not np.array_equal(b, np.array(a)) for b, a in zip(before, after, strict=True))


def test_plain_round_gives_no_gradient_to_the_encoder():
    """The failure the library exists for: tf.round inside the model has no gradient."""

    class PlainRound(keras.layers.Layer):
        def call(self, inputs):
            return tf.round(inputs)

    task_model = tasks.build(tasks.DIGIT_HASH, PlainRound())
    x = tf.constant(load_split().x_train[:8])
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(task_model.train_model(x, training=True))
    grads = tape.gradient(loss, task_model.encoder.trainable_weights)
    assert all(g is None for g in grads)


def test_parse_param_and_anneal():
    assert train.parse_param("alpha=12") == ("alpha", 12)
    assert train.parse_param("slope=1e4") == ("slope", 1e4)
    assert train.parse_param("straight_through=false") == ("straight_through", False)
    assert train.parse_anneal("alpha:linear:1:12") == {
        "parameter": "alpha",
        "schedule": "linear",
        "start": 1.0,
        "end": 12.0,
        "unit": "epoch",
        "duration": None,
    }
    assert train.parse_anneal("slope:exponential:1:100:step:50")["duration"] == 50
    for bad in ("alpha:linear:1", "alpha:linear:a:2", "alpha:linear:1:2:hour:3"):
        with pytest.raises(argparse.ArgumentTypeError):
            train.parse_anneal(bad)
    with pytest.raises(argparse.ArgumentTypeError):
        train.parse_param("alpha")


def test_resolve_anneal_defaults_to_the_whole_training():
    epoch = train.parse_anneal("alpha:linear:1:12")
    assert train.resolve_anneal(epoch, 30, 1347, 32)["duration"] == 30
    step = train.parse_anneal("alpha:linear:1:12:step:0")
    step["duration"] = None
    assert train.resolve_anneal(step, 2, 100, 32)["duration"] == 8


def test_cli_rejects_unknown_parameters_before_training(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--method", "ste", "--param", "alpha=3", "--models-root", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "alpha" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_cli_rejects_an_anneal_to_an_invalid_value_before_training(tmp_path, capsys):
    """Issue 13, defect 1: `temperature` annealed to 0 used to crash after training."""
    argv = ["--method", "binary_concrete", "--anneal", "temperature:linear:1:0"]
    with pytest.raises(SystemExit) as exit_info:
        train.main([*argv, "--epochs", "1", "--models-root", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "temperature" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("name", ["../escape", ".hidden", "a/b", ""])
def test_cli_rejects_model_names_that_are_not_one_visible_directory(name, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--name", name, "--models-root", str(tmp_path)])
    assert exit_info.value.code == 2
    assert not list(tmp_path.iterdir())


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_cli_writes_numeric_versions_and_never_overwrites(tmp_path, capsys):
    argv = [
        "--task",
        "digit-bits",
        "--method",
        "sigmoid",
        "--param",
        "slope=8",
        "--epochs",
        "1",
        "--models-root",
        str(tmp_path),
        "--name",
        "bits",
        "--verbose",
        "0",
    ]
    assert train.main(argv) == 0
    first = tmp_path / "bits" / "1"
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(first)
    digests = {p: _digest(p) for p in first.rglob("*") if p.is_file()}
    assert train.main([*argv, "--seed", "1"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(tmp_path / "bits" / "2")
    assert sorted(p.name for p in (tmp_path / "bits").iterdir()) == ["1", "2"]
    assert {p: _digest(p) for p in first.rglob("*") if p.is_file()} == digests
    meta = read_metadata(tmp_path / "bits" / "2")
    assert (meta["model_name"], meta["version"], meta["training"]["seed"]) == ("bits", 2, 1)
    assert meta["training"]["command"] == "python -m model.train " + " ".join(
        [*argv, "--seed", "1"]
    )
    assert meta["rounding_layers"][0]["params"] == {"slope": 8.0, "center": 0.5}
    json.dumps(meta, allow_nan=False)


def test_config_arguments_round_trip_through_the_parser():
    config = train.TrainConfig(
        task="digit-hash",
        method="soft_round",
        params={"alpha": 3.0},
        anneal=train.parse_anneal("alpha:cosine:1:9:epoch:5"),
        epochs=7,
        batch_size=16,
        seed=4,
    )
    args = train.build_parser().parse_args(train.config_arguments(config))
    assert (args.task, args.method, dict(args.param), args.anneal) == (
        "digit-hash",
        "soft_round",
        {"alpha": 3.0},
        config.anneal,
    )
    assert (args.epochs, args.batch_size, args.seed) == (7, 16, 4)
