"""`Annealer`: schedule formulas, in fit, and progress that survives save/reload."""

import math

import keras
import numpy as np
import pytest

import diffround


@pytest.mark.parametrize(
    ("schedule", "reference"),
    [
        ("linear", lambda s, e, p: s + (e - s) * p),
        ("exponential", lambda s, e, p: math.exp(math.log(s) + (math.log(e) - math.log(s)) * p)),
        ("cosine", lambda s, e, p: s + (e - s) * (1 - math.cos(math.pi * p)) / 2),
    ],
)
def test_schedule_values_match_formulas(schedule, reference):
    for start, end in ((1.0, 12.0), (1000.0, 10.0)):
        for p in np.linspace(0, 1, 11):
            assert diffround.schedule_value(schedule, start, end, p) == pytest.approx(
                reference(start, end, p), rel=1e-12
            )
        assert diffround.schedule_value(schedule, start, end, 1.7) == pytest.approx(end)
        assert diffround.schedule_value(schedule, start, end, -1.0) == pytest.approx(start)


def test_annealer_validates_arguments():
    with pytest.raises(ValueError, match="Expected one of linear, exponential, cosine"):
        diffround.Annealer("alpha", 1.0, 2.0, 3, schedule="step")
    with pytest.raises(ValueError, match="Received: unit='batch'"):
        diffround.Annealer("alpha", 1.0, 2.0, 3, unit="batch")
    with pytest.raises(ValueError, match="Received: duration=0"):
        diffround.Annealer("alpha", 1.0, 2.0, 0)
    with pytest.raises(ValueError, match=r"Expected a positive float\. Received: start=0\.0"):
        diffround.Annealer("alpha", 0.0, 2.0, 3, schedule="exponential")


def _model(*layers):
    inputs = keras.Input((3,))
    x = keras.layers.Dense(2, activation="sigmoid")(inputs)
    for layer in layers:
        x = layer(x)
    model = keras.Model(inputs, x)
    model.compile(optimizer="sgd", loss="mse")
    return model


DATA = (np.random.default_rng(0).uniform(size=(16, 3)), np.ones((16, 2)))


class _Record(keras.callbacks.Callback):
    """Records a layer parameter at the start of every epoch and batch."""

    def __init__(self, layer, name):
        super().__init__()
        self.layer, self.name, self.epochs, self.batches = layer, name, [], []

    def _value(self):
        return float(self.layer.parameter_variables[self.name].numpy())

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append(self._value())

    def on_train_batch_begin(self, batch, logs=None):
        self.batches.append(self._value())


@pytest.mark.parametrize("schedule", ["linear", "exponential", "cosine"])
def test_epoch_annealing_follows_schedule_and_ends_at_end(schedule):
    layer = diffround.DiffRound("soft_round")
    model = _model(layer)
    annealer = diffround.Annealer("alpha", 1.0, 16.0, 4, schedule=schedule)
    record = _Record(layer, "alpha")
    history = model.fit(*DATA, epochs=6, batch_size=8, verbose=0, callbacks=[annealer, record])
    expected = [diffround.schedule_value(schedule, 1.0, 16.0, min(t / 4, 1)) for t in range(6)]
    np.testing.assert_allclose(record.epochs, expected, rtol=1e-6)
    assert float(layer.parameter_variables["alpha"].numpy()) == 16.0
    assert int(layer.anneal_step.numpy()) == 6
    assert history.history["alpha"][-1] == 16.0


def test_step_annealing_changes_every_batch_and_only_given_layers():
    annealed = diffround.DiffRound("sigmoid", slope=1.0)
    untouched = diffround.DiffRound("sigmoid", slope=1.0)
    model = _model(annealed, untouched)
    annealer = diffround.Annealer("slope", 1.0, 9.0, 4, unit="step", layers=[annealed])
    record = _Record(annealed, "slope")
    model.fit(*DATA, epochs=3, batch_size=8, verbose=0, callbacks=[annealer, record])
    np.testing.assert_allclose(record.batches, [1.0, 3.0, 5.0, 7.0, 9.0, 9.0])
    assert float(untouched.parameter_variables["slope"].numpy()) == 1.0


def test_annealer_without_matching_layer_fails_clearly():
    model = _model(diffround.DiffRound("ste"))
    with pytest.raises(ValueError, match="no DiffRound layer with a float parameter 'alpha'"):
        model.fit(*DATA, epochs=1, verbose=0, callbacks=[diffround.Annealer("alpha", 1, 2, 2)])


def test_annealing_progress_survives_keras_save_and_reload(tmp_path):
    layer = diffround.DiffRound("binary_concrete", temperature=1.0, name="rounding")
    model = _model(layer)
    schedule = {"parameter": "temperature", "start": 1.0, "end": 0.1, "duration": 4}
    model.fit(*DATA, epochs=2, verbose=0, callbacks=[diffround.Annealer(**schedule)])
    halfway = diffround.schedule_value("linear", 1.0, 0.1, 0.5)
    assert float(layer.parameter_variables["temperature"].numpy()) == pytest.approx(halfway)
    model.save(tmp_path / "m.keras")

    loaded = keras.saving.load_model(tmp_path / "m.keras")
    reloaded = loaded.get_layer("rounding")
    assert int(reloaded.anneal_step.numpy()) == 2
    record = _Record(reloaded, "temperature")
    loaded.fit(*DATA, epochs=3, verbose=0, callbacks=[diffround.Annealer(**schedule), record])
    expected = [diffround.schedule_value("linear", 1.0, 0.1, min(t / 4, 1)) for t in (2, 3, 4)]
    np.testing.assert_allclose(record.epochs, expected, rtol=1e-6)
    assert float(reloaded.parameter_variables["temperature"].numpy()) == pytest.approx(0.1)
