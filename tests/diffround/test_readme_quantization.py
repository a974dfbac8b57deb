"""The README's Quantization example runs as written and its stated values hold."""

import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_quantization_example_runs(tmp_path):
    text = README.read_text()
    section = text[text.index("### Quantization") :]
    code = re.findall(r"```python\n(.*?)```", section, flags=re.S)[0]
    assert "/tmp/quantized" in code
    namespace: dict = {}
    exec(code.replace("/tmp/quantized", str(tmp_path / "quantized")), namespace)
    act = namespace["act"]
    assert float(np.min(act(namespace["x"]).numpy())) == -2.0
    assert act.grid_spec() == {"step": 0.25, "offset": 0.0, "min": -2.0, "max": 1.75}
    assert (tmp_path / "quantized" / "saved_model.pb").exists()
    y = namespace["model"].predict(namespace["x"], verbose=0)
    np.testing.assert_array_equal(y / 0.5, np.round(y / 0.5))
