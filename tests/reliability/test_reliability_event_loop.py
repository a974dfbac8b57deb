"""The event loop stays responsive under the worst bodies and the largest `/grad` requests.

A server with the default limits (8 MiB bodies, 4096 rows) gets, from client
threads, for `SECONDS`: 8 MB bodies built to be slow to check (one huge
string value, one made of escapes, millions of tiny strings, duplicate keys,
deep-ish nesting) and the largest allowed `/grad` and v2 gradient requests
(4096 rows, answers of ~10 MB). Meanwhile `/healthz` is polled every 20 ms
on a connection of its own; its p99 latency must stay under 100 ms (the
Kubernetes probes in deploy/ time out after 3 s). Every attack request gets
its 4xx or a correct answer.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import orjson
import rel_support as support

SECONDS = 12.0
#: The prober runs in its own process: in this one, the attack threads' JSON work would
#: hold this interpreter's GIL and be measured as the server's latency.
PROBE = """
import json, sys, time, httpx
url, seconds = sys.argv[1], float(sys.argv[2])
latencies, statuses = [], []
with httpx.Client(base_url=url, timeout=10) as client:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        start = time.perf_counter()
        statuses.append(client.get("/healthz").status_code)
        latencies.append(time.perf_counter() - start)
        time.sleep(0.02)
print(json.dumps({"latencies": latencies, "statuses": statuses}))
"""
P99_LIMIT_S = 0.100
MIB = 1024 * 1024
MODEL = "digit-bits"


def worst_bodies() -> list[tuple[str, bytes, int]]:
    """(path, body, expected status): each about 8 MB, each slow to check in its own way."""
    size = 8 * MIB - 4096
    return [
        ("/predict", b'{"inputs": "' + b"a" * size + b'"}', 422),
        ("/predict", b'{"inputs": "' + b'\\"' * (size // 2) + b'"}', 422),
        (f"/v1/models/{MODEL}:predict", b'{"instances": [' + b'"a",' * (size // 4) + b'"a"]}', 400),
        ("/grad", b'{"inputs": [' + b'{"a": 1, "a": 2},' * (size // 17) + b"1]}", 422),
        ("/predict", b'{"inputs": [' + b"[[[1]]]," * (size // 8) + b"1]}", 422),
    ]


def test_healthz_p99_stays_under_100_ms_under_the_worst_bodies_and_largest_grads(
    start_server, reliability_models_root, reference: support.Reference, tmp_path
) -> None:
    server = start_server(reliability_models_root)
    server.wait_ready()
    rows = support.digit_rows(4096, 5, reference.input_width)
    grad_expected = reference.grad_expected(rows)
    v2_expected = reference.grad(rows)
    exact = {*reference.outputs, *reference.exact_grad_keys}
    grad_body = orjson.dumps({"inputs": rows}, option=orjson.OPT_SERIALIZE_NUMPY)
    v2_body = orjson.dumps(
        support.v2_infer_body(rows, reference.grad_keys, input_name=reference.input_name),
        option=orjson.OPT_SERIALIZE_NUMPY,
    )
    bodies = worst_bodies()
    stop = threading.Event()
    failures: list[str] = []
    counts = {"worst": 0, "grad": 0}
    json_headers = {"content-type": "application/json"}

    def attack_worst() -> None:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            i = 0
            while not stop.is_set():
                path, body, status = bodies[i % len(bodies)]
                i += 1
                response = client.post(path, content=body, headers=json_headers)
                if response.status_code != status:
                    failures.append(f"{path}: {response.status_code} {response.text[:200]}")
                counts["worst"] += 1

    def attack_grad() -> None:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            i = 0
            while not stop.is_set():
                if i % 2 == 0:
                    response = client.post("/grad", content=grad_body, headers=json_headers)
                    ok = response.status_code == 200
                    got = (
                        reference.native_grad_tensors(orjson.loads(response.content))
                        if ok
                        else None
                    )
                    expected = grad_expected
                else:
                    response = client.post(
                        f"/v2/models/{MODEL}/infer", content=v2_body, headers=json_headers
                    )
                    ok = response.status_code == 200
                    got = support.v2_tensors(orjson.loads(response.content)) if ok else None
                    expected = v2_expected
                i += 1
                if got is None:
                    failures.append(f"grad: {response.status_code} {response.text[:200]}")
                    continue
                try:
                    support.assert_grad_close(got, expected, exact, "largest grad")
                except AssertionError as exc:
                    failures.append(str(exc)[:300])
                counts["grad"] += 1

    threads = [threading.Thread(target=f, daemon=True) for f in (attack_worst, attack_grad)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)  # the attack is under way
    probe = subprocess.run(
        [sys.executable, "-c", PROBE, server.url, str(SECONDS)],
        capture_output=True,
        text=True,
        timeout=SECONDS + 60,
        check=True,
    )
    stop.set()
    for thread in threads:
        thread.join(60)
    measured = json.loads(probe.stdout)
    latencies = measured["latencies"]
    failures += [f"healthz: {status}" for status in measured["statuses"] if status != 200]

    p50, p99 = np.quantile(latencies, [0.5, 0.99])
    support.record("healthz p50 / p99 under attack (ms)", f"{p50 * 1000:.1f} / {p99 * 1000:.1f}")
    support.record("healthz max under attack (ms)", round(max(latencies) * 1000, 1))
    support.record("attack requests (8 MB worst bodies, 4096-row grads)", str(counts))
    assert not failures, failures[:5]
    assert counts["worst"] >= len(bodies) and counts["grad"] >= 2, counts
    assert p99 < P99_LIMIT_S, (p50, p99, max(latencies), counts)
