"""bench/: the raw ASGI limit, the peers' request and answer formats, the report's new rows.

Fast checks of the pieces `python -m bench` wires together; the benchmark itself
is not a test (it asserts nothing and takes minutes).
"""

from __future__ import annotations

import asyncio
import json
import sysconfig

import httpx

from bench import raw_asgi_app, report, servers


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
        "outputs": [[0, 0, 1, 1]],
        "decoded": [3],
    }
    assert int(predict.headers["content-length"]) == len(predict.content)
    assert _call("GET", "/readyz").json() == {"status": "ready"}
    assert _call("GET", "/predict").status_code == 404
    assert _call("POST", "/elsewhere").status_code == 404


def test_v2_body_and_answer_round_trip_for_triton():
    rows = [[float(i + j) for j in range(64)] for i in range(3)]
    body = json.loads(servers.predict_body("triton", rows))
    (tensor,) = body["inputs"]
    assert tensor == {"name": "inputs", "shape": [3, 64], "datatype": "FP32", "data": rows}
    answer = {
        "model_name": "digit-bits",
        "outputs": [{"name": "outputs", "datatype": "FP32", "shape": [3, 4],
                     "data": [0.0, 1.0, 1.0, 0.0, 1, 1, 1, 1, 0, 0, 0, 1]}],
    }  # fmt: skip
    assert servers.answer_rows("triton", answer) == [[0, 1, 1, 0], [1, 1, 1, 1], [0, 0, 0, 1]]
    assert servers.answer_rows("peer", {"predictions": [[0, 1, 1, 0]]}) == [[0, 1, 1, 0]]
    assert servers.answer_rows("service", {"outputs": [[0.0, 1.0, 1.0, 0.0]]}) == [[0, 1, 1, 0]]
    assert servers.answer_rows("asgi", {"outputs": [[0, 0, 1, 1]]}) is None
    assert json.loads(servers.predict_body("peer", rows[:1])) == {"instances": rows[:1]}


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
        _load("peer", "/v1/models/digit-bits:predict", 1500, 5.0, 30.0),
        _load("triton", "/v2/models/digit-bits/infer", 2500, 5.0, 26.0),
        _load("service", "/predict", 5000, 0.2, 0.5, conns=1),
        _load("naive", "/predict", 1800, 0.5, 0.9, conns=1),
    ]
    rows = {r["target"]: r for r in report.targets({"http": {"loads": loads}})}
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
    assert "Triton (PyTriton)" in report._http_table(loads)


def test_report_runtime_row_needs_identical_answers_and_20_us():
    runtime = {"chosen": "tflite", "savedmodel_b1_us": 300.0, "tflite_b1_us": 9.0,
               "equal_b1": True, "equal_b64": True}  # fmt: skip
    (row,) = report.targets({"runtimes": runtime})
    assert row["pass"] is True and row["ratio"] == 9.0 / 20.0
    (row,) = report.targets({"runtimes": {**runtime, "equal_b64": False}})
    assert row["pass"] is False
