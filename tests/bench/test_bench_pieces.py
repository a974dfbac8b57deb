"""bench/: the raw ASGI limit, the peers' request and answer formats, the report's new rows.

Fast checks of the pieces `python -m bench` wires together; the benchmark itself
is not a test (it asserts nothing and takes minutes).
"""

from __future__ import annotations

import asyncio
import json
import sysconfig
from pathlib import Path

import httpx
import numpy as np
import pytest

from bench import http_load, protocols, raw_asgi_app, report, servers
from bench.modelspec import ModelSpec


def _call(method: str, path: str, body: bytes = b"") -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=raw_asgi_app.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            return await client.request(method, path, content=body)

    return asyncio.run(go())


def test_raw_asgi_answers_the_floor_constant_and_ready_and_404():
    predict = _call("POST", "/predict", b'{"inputs": [[0.0]]}')
    assert predict.status_code == 200
    assert predict.headers["content-type"] == "application/json"
    assert predict.json() == {
        "model": "floor",
        "version": 1,
        "outputs": {"bits": [[0, 0, 1, 1]]},
        "decoded": [3],
    }
    assert int(predict.headers["content-length"]) == len(predict.content)
    assert _call("GET", "/readyz").json() == {"status": "ready"}
    assert _call("GET", "/predict").status_code == 404
    assert _call("POST", "/elsewhere").status_code == 404


#: What `GET /models/{name}` answers for a two-input model (abridged): the bench's only source.
TWO_INPUTS = {
    "inputs": [{"name": "image", "range": [0, 16]}],
    "examples": [
        {"inputs": {"image": [[[1.0], [2.0]], [[3.0], [4.0]]], "count": [7]}},
        {"inputs": {"image": [[[1.0], [2.0]]], "count": [7]}},  # wrong shape: dropped
    ],
    "grad": {"outputs": {}},
    "signatures": {
        "serving_default": {
            "inputs": [
                {"name": "image", "dtype": "float32", "shape": [-1, 2, 2, 1]},
                {"name": "count", "dtype": "int32", "shape": [-1, 1]},
            ],
            "outputs": [
                {"name": "levels", "dtype": "float32", "shape": [-1, 2]},
                {"name": "score", "dtype": "float32", "shape": [-1]},
            ],
        },
        "grad": {"inputs": [], "outputs": []},
    },
}


def test_spec_from_the_services_metadata_builds_rows_from_examples_in_each_dtype():
    spec = ModelSpec.from_metadata("two", TWO_INPUTS)
    assert spec.input_names == ["image", "count"]
    assert [t.row_shape for t in spec.inputs] == [(2, 2, 1), (1,)]
    assert spec.gradients is True and len(spec.examples) == 1
    batch = spec.batch(3)
    assert batch["image"].dtype == np.float32 and batch["count"].dtype == np.int32
    expected = np.tile(np.array([[[1.0], [2.0]], [[3.0], [4.0]]], np.float32), (3, 1, 1, 1))
    np.testing.assert_array_equal(batch["image"], expected)
    np.testing.assert_array_equal(batch["count"], [[7], [7], [7]])


def test_spec_without_examples_draws_values_in_the_declared_range():
    document = {**TWO_INPUTS, "examples": []}
    batch = ModelSpec.from_metadata("two", document).batch(50)
    assert batch["image"].shape == (50, 2, 2, 1)
    assert batch["image"].min() >= 0 and batch["image"].max() <= 16  # the metadata's range
    assert batch["count"].dtype == np.int32 and set(np.unique(batch["count"])) <= {0, 1}


def test_bodies_in_every_protocol_for_a_two_input_model():
    spec = ModelSpec.from_metadata("two", TWO_INPUTS)
    batch = spec.batch(2)
    native = json.loads(protocols.body(protocols.NATIVE, spec, batch))
    assert native == {"inputs": {n: batch[n].tolist() for n in ("image", "count")}}
    v1 = json.loads(protocols.body(protocols.V1, spec, batch))
    assert v1["instances"][1] == {"image": batch["image"][1].tolist(), "count": [7]}
    v2 = json.loads(protocols.body(protocols.V2, spec, batch))
    image, count = v2["inputs"]
    assert image == {"name": "image", "shape": [2, 2, 2, 1], "datatype": "FP32",
                     "data": batch["image"].reshape(-1).tolist()}  # fmt: skip
    assert count == {"name": "count", "shape": [2, 1], "datatype": "INT32", "data": [7, 7]}


def test_answers_of_every_protocol_decode_to_the_same_arrays_and_differences_are_named():
    spec = ModelSpec.from_metadata("two", TWO_INPUTS)
    levels, score = [[0, 3], [1, 2]], [0.1, 0.25]
    answers = {
        "native": {"outputs": {"levels": levels, "score": score}},
        "v1": {"predictions": [{"levels": [0.0, 3.0], "score": 0.1},
                               {"levels": [1.0, 2.0], "score": 0.25}]},
        "v2": {"outputs": [
            {"name": "levels", "datatype": "FP32", "shape": [2, 2], "data": [0.0, 3.0, 1.0, 2.0]},
            {"name": "score", "datatype": "FP32", "shape": [2], "data": [0.1, 0.25]},
        ]},
    }  # fmt: skip
    arrays = {p: protocols.answer_arrays(p, spec, doc) for p, doc in answers.items()}
    for got in arrays.values():
        assert protocols.differences(arrays["native"], got) == []
        np.testing.assert_array_equal(got["levels"], np.array(levels, np.float32))
        assert got["score"].dtype == np.float32
    changed = {**arrays["v1"], "levels": np.array([[0, 3], [1, 1]], np.float32)}
    assert protocols.differences(arrays["native"], changed) == ["'levels' values differ"]
    assert protocols.differences(arrays["native"], {"levels": arrays["v2"]["levels"]}) == [
        "'score' missing"
    ]


def test_check_answers_refuses_a_server_that_answers_other_bits():
    spec = ModelSpec.from_metadata("one", ONE_INPUT)
    good = ("native", {"outputs": {"bits": [[0, 1, 1, 0]]}})
    peer = ("v1", {"predictions": [[0.0, 1.0, 1.0, 0.0]]})
    triton = ("v2", {"outputs": [{"name": "bits", "datatype": "FP32", "shape": [1, 4],
                                  "data": [0.0, 1.0, 1.0, 1.0]}]})  # fmt: skip
    arrays = http_load.check_answers(spec, {"service": good, "peer": peer}, "service")
    np.testing.assert_array_equal(arrays["peer"]["bits"], [[0, 1, 1, 0]])
    with pytest.raises(RuntimeError, match="triton answered differently from service"):
        http_load.check_answers(spec, {"service": good, "triton": triton}, "service")


#: The default model's metadata as the service answers it (abridged).
ONE_INPUT = {
    "examples": [{"inputs": {"inputs": [float(i) for i in range(64)]}, "label": 0}],
    "signatures": {
        "serving_default": {
            "inputs": [{"name": "inputs", "dtype": "float32", "shape": [-1, 64]}],
            "outputs": [{"name": "bits", "dtype": "float32", "shape": [-1, 4]}],
        }
    },
}


def test_one_input_bodies_keep_the_plain_tensor_forms():
    spec = ModelSpec.from_metadata("digit-bits", ONE_INPUT)
    assert spec.gradients is False  # no grad map, no grad signature
    one = spec.batch(1)
    row = [float(i) for i in range(64)]
    assert json.loads(protocols.body(protocols.NATIVE, spec, one)) == {"inputs": [row]}
    assert json.loads(protocols.body(protocols.V1, spec, one)) == {"instances": [row]}
    assert servers.predict_route("triton", "digit-bits") == ("/v2/models/digit-bits/infer", "v2")
    assert servers.service_route("v1", "m") == ("/v1/models/m:predict", "v1")


def test_triton_gets_this_interpreters_libpython_dir_unless_it_is_the_system_one(monkeypatch):
    monkeypatch.delenv("LD_LIBRARY_PATH", raising=False)
    monkeypatch.setattr(
        sysconfig, "get_config_var", {"LIBDIR": "/opt/py/lib", "LDLIBRARY": "libpython3.11.so"}.get
    )
    assert servers.python_libdir_env() == {"LD_LIBRARY_PATH": "/opt/py/lib"}
    monkeypatch.setenv("LD_LIBRARY_PATH", "/x")
    assert servers.python_libdir_env() == {"LD_LIBRARY_PATH": "/opt/py/lib:/x"}
    system = {"LIBDIR": "/usr/lib/x86_64-linux-gnu", "LDLIBRARY": "libpython3.11.so"}
    monkeypatch.setattr(sysconfig, "get_config_var", system.get)
    assert servers.python_libdir_env() == {}


def _load(server: str, path: str, rps: float, p50: float, p99: float, conns: int = 32) -> dict:
    return {"server": server, "path": path, "rows": 1, "connections": conns, "rps": rps,
            "p50_ms": p50, "p99_ms": p99, "errors": 0, "cpu_us_per_request": None}  # fmt: skip


def test_report_rates_the_service_against_the_limit_floor_naive_and_both_peers():
    loads = [
        _load("service", "/predict", 9000, 1.0, 6.0),
        _load("asgi", "/predict", 30000, 0.5, 3.0),
        _load("floor", "/predict", 9000, 1.0, 7.0),
        _load("naive", "/predict", 2000, 5.0, 30.0),
        _load("peer", "/v1/models/mine:predict", 1500, 5.0, 30.0),
        _load("triton", "/v2/models/mine/infer", 2500, 5.0, 26.0),
        _load("service", "/predict", 5000, 0.2, 0.5, conns=1),
        _load("naive", "/predict", 1800, 0.5, 0.9, conns=1),
    ]
    rows = {r["target"]: r for r in report.targets({"http": {"loads": loads, "model": "mine"}})}
    limit = rows["/predict 1-row, 32 conns: req/s vs raw ASGI constant (the HTTP limit)"]
    assert limit["ratio"] == 0.3 and limit["goal"] == report.REFERENCE
    assert rows["/predict 1-row, 32 conns: req/s vs trivial endpoint"]["pass"] is True
    assert rows["/predict 1-row, 32 conns: req/s vs naive"]["ratio"] == 4.5
    assert rows["/predict 1-row, 32 conns: req/s vs naive"]["pass"] is False  # goal 5x
    assert rows["/predict 1-row, 32 conns: req/s vs Triton (PyTriton)"]["ratio"] == 3.6
    assert rows["p99 at 32 conns vs the trivial endpoint's"]["pass"] is True
    assert rows["/predict 1-row, 1 conn: p50 vs naive"]["ratio"] == 0.4
    table = report.targets_table(list(rows.values()))
    assert "| reference |" in table
    assert "Triton (PyTriton)" in report._http_table(loads, "mine")


#: The committed doc's HTTP table, as an earlier run wrote it (abridged).
COMMITTED = """Generated by `python -m bench` (full) on 2026-11-25 15:31 UTC; `make bench`
## HTTP: 1-row requests

| connections | service: req/s (p50 / p99 ms; CPU us/req) | trivial endpoint: req/s (...) |
|---|---|---|
| 1 | 1,623 (0.6 / 0.9; 600) | 1,869 (0.5 / 0.8; 150) |
| 8 | 3,215 (2.4 / 3.2; 309) | 2,002 (3.8 / 7.6; 497) |
| 32 | 4,039 (7.8 / 10.6; 1,246) | 2,005 (15.4 / 30.1; 100) |

The service's inference routes side by side (a second table: its columns are routes):

| connections | /predict | /v1 :predict | /v2 infer | /grad |
|---|---|---|---|---|
| 1 | 1,623 (0.6 / 0.9; 600) | 1,700 (0.5 / 0.9; 550) | 1,500 (0.6 / 1; 640) | 500 (2 / 3; 2,000) |
| 32 | 4,039 (7.8 / 11; 1,246) | 4,500 (7 / 9; 1,100) | 3,900 (8 / 11; 1,300) | 900 (30 / 60; 3e3) |

## Large requests and /grad
| 1 | 9 (1.0 / 2.0; 5) |
"""


def test_service_routes_and_cpu_against_the_committed_run():
    baseline = report.baseline_from(COMMITTED)
    assert baseline == {"cpu_us_c1": 600.0, "cpu_us_c32": 1246.0, "floor_cpu_us_c1": 150.0,
                        "floor_cpu_us_c32": 100.0, "date": "2026-11-25 15:31 UTC"}  # fmt: skip
    assert report.baseline_from("# Benchmarks\n") is None

    def cpu(load: dict, us: float) -> dict:
        return {**load, "cpu_us_per_request": us}

    loads = [
        cpu(_load("service", "/predict", 1000, 0.5, 1.0, conns=1), 630.0),
        cpu(_load("service", "/predict", 4000, 5.0, 9.0), 1500.0),
        cpu(_load("floor", "/predict", 9000, 0.1, 9.0, conns=1), 300.0),  # 2x the committed
        _load("service", "/v1/models/m:predict", 900, 0.5, 1.0, conns=1),
        _load("service", "/v2/models/m/infer", 700, 0.5, 1.0, conns=1),
        _load("service", "/v2/models/m/infer", 3600, 5.0, 9.0),
        _load("service", "/grad", 400, 1.2, 2.0, conns=1),
        _load("service-tflite", "/predict", 1100, 0.4, 1.0, conns=1),
        _load("service-tflite", "/grad", 800, 0.7, 2.0, conns=1),
    ]
    results = {"http": {"loads": loads, "model": "m"}, "baseline": baseline}
    rows = {r["target"]: r for r in report.targets(results)}
    assert rows["/v1 :predict 1-row, 1 conn: req/s vs /predict"]["pass"] is True
    v2 = rows["/v2 infer (JSON) 1-row, 1 conn: req/s vs /predict"]
    assert v2["ratio"] == 0.7 and v2["pass"] is False and v2["miss"] == "needs 1.14x more"
    assert rows["/v2 infer (JSON) 1-row, 32 conns: req/s vs /predict"]["ratio"] == 0.9
    cpu1 = rows["/predict 1-row, 1 conn: server CPU per request vs the committed run "
                "(2026-11-25 15:31 UTC)"]  # fmt: skip
    assert cpu1["ratio"] == 1.05 and cpu1["pass"] is True
    cpu32 = rows["/predict 1-row, 32 conns: server CPU per request vs the committed run "
                 "(2026-11-25 15:31 UTC)"]  # fmt: skip
    assert cpu32["pass"] is False and cpu32["miss"] == "20% more CPU"
    share = rows["/predict 1-row, 1 conn: server CPU per request in the trivial route's CPU, "
                 "vs the committed run's"]  # fmt: skip
    assert share["measured"] == "2.10 vs 4.00 x the trivial route" and share["pass"] is True
    assert rows["/grad batch 1 latency vs /predict (p50, 1 conn)"]["ratio"] == 2.4
    forced = rows["/grad batch 1 latency vs /predict, GRAD_RUNTIME=tflite (p50, 1 conn)"]
    assert forced["ratio"] == pytest.approx(1.75) and forced["pass"] is True
    table = report._routes_table(loads, "m")
    assert "| 1 | 1,000 (0.50 / 1.0; 630) | 900 (0.50 / 1.0; 0) | 700" in table


def test_report_runtime_row_needs_identical_answers_and_20_us():
    runtime = {"chosen": "tflite", "savedmodel_b1_us": 300.0, "tflite_b1_us": 9.0,
               "equal_b1": True, "equal_b64": True}  # fmt: skip
    (row,) = report.targets({"runtimes": runtime})
    assert row["pass"] is True and row["ratio"] == 9.0 / 20.0
    (row,) = report.targets({"runtimes": {**runtime, "equal_b64": False}})
    assert row["pass"] is False
    graph = {"chosen": "graph", "savedmodel_b1_us": 300.0, "graph_b1_us": 18.0,
             "graph_equal_b1": True, "graph_equal_b64": True, "equal_b1": False}  # fmt: skip
    (row,) = report.targets({"runtimes": graph})
    assert row["pass"] is True and row["measured"].startswith("18.0 us (graph;")
    (row,) = report.targets({"runtimes": {**graph, "graph_equal_b1": False}})
    assert row["pass"] is False


def test_report_runtime_section_lists_each_runtime_and_signature():
    runtime = {"chosen": "tflite", "reason": "tflite (...): bit-identical", "choose_s": 0.4,
               "savedmodel_b1_us": 300.0, "tflite_b1_us": 9.0, "graph_b1_us": 20.5,
               "equal_b1": True, "graph_equal_b1": True, "savedmodel_b64_us": 400.0,
               "tflite_b64_us": 30.0, "graph_b64_us": 60.0, "equal_b64": False,
               "graph_equal_b64": True, "grad_savedmodel_b1_us": 500.0,
               "grad_graph_b1_us": 90.0, "grad_graph_equal_b1": True,
               "grad_tflite_b1_us": 25.0, "grad_largest_difference_b1": 3e-8,
               "grad_graph_reason": "graph (...): bit-identical",
               "grad_reason": "tflite (...)"}  # fmt: skip
    text = "\n".join(report._runtime_section(runtime))
    assert "| `serving_default` | 1 | 300.0 | 9.0 | 20.5 | yes | yes |" in text
    assert "| `serving_default` | 64 | 400.0 | 30.0 | 60.0 | **no** | yes |" in text
    assert "| `grad` | 1 | 500.0 | 25.0 | 90.0 | **no** (up to 3e-08) | yes |" in text
    assert "`grad`, `GRAD_RUNTIME=graph` (the default): graph (...): bit-identical." in text


def test_served_root_serves_any_saved_model_dir_under_its_name(tmp_path):
    from bench.__main__ import served_root

    plain = tmp_path / "exports" / "my_model"
    plain.mkdir(parents=True)
    (plain / "saved_model.pb").write_bytes(b"")
    root, name = served_root(plain, root=tmp_path / "root")
    assert name == "my_model" and (root / "my_model" / "1").resolve() == plain.resolve()
    numbered = tmp_path / "models" / "digits" / "7"
    numbered.mkdir(parents=True)
    (numbered / "saved_model.pb").write_bytes(b"")
    root, name = served_root(numbered, root=tmp_path / "root")
    assert name == "digits" and (root / "digits" / "7").resolve() == numbered.resolve()
    assert sorted(p.name for p in root.iterdir()) == ["digits"]  # only the model under test
    root, name = served_root(numbered, "mine", root=tmp_path / "root")
    assert (root / "mine" / "7").is_dir()
    with pytest.raises(SystemExit, match="not a SavedModel"):
        served_root(tmp_path, root=tmp_path / "root")


def test_exports_gradients_reads_the_metadata_grad_map(tmp_path):
    from bench.http_load import exports_gradients

    def version(name: str, metadata: str | None) -> Path:
        path = tmp_path / name
        (path / "assets.extra").mkdir(parents=True)
        if metadata is not None:
            (path / "assets.extra" / "diffround.json").write_text(metadata)
        return path

    grad = {"outputs": {"bits": {"relaxed": "bits__relaxed"}}, "layers": {}}
    assert exports_gradients(version("diffround", json.dumps({"grad": grad}))) is True
    assert exports_gradients(version("no-map", json.dumps({"grad": None}))) is False
    assert exports_gradients(version("plain", None)) is False  # Keras export, TF1 graph
    assert exports_gradients(version("broken", "{not json")) is False
    assert exports_gradients(version("a-list", "[1, 2]")) is False
    assert exports_gradients(tmp_path / "missing") is False
