"""Property-based fuzzing of the live service from its own OpenAPI spec (schemathesis 3).

Every operation in `/openapi.json` gets requests generated from the spec
(schemathesis' positive data, and its negative data where the spec allows it),
a share of them steered to the served model's name and version and to bodies
that pass validation, so that the 200 answers' schemas are checked too. Each
response must not be a 5xx, must conform to the spec (status code, content
type, headers, body schema: schemathesis' `call_and_validate` with all its
checks) and must not leak a traceback or a path. Generation is derandomized,
so a failure reproduces.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import hypothesis.errors
import pytest
import rel_support as support
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import DataGenerationMethod
from schemathesis.exceptions import SkipTest

MODEL = "digit-bits"
MIN_REQUESTS = 1000
#: Examples per operation: with a JSON body, with path parameters only, with neither.
# (Generating bodies of 64-number rows is what costs time; path-only operations are cheap.)
BODY_EXAMPLES, PATH_EXAMPLES, NEGATIVE_EXAMPLES = 60, 60, 40
#: Operations whose negative (schema-violating) data schemathesis can generate quickly.
NEGATIVE_PATHS = ("/predict", "/grad")
GRAD_OUTPUTS = ("hard", "surrogate", "pre_round", "local_grad", "input_grad")

values = st.integers(0, 16) | st.floats(0.0, 16.0, width=32)
rows = st.lists(st.lists(values, min_size=64, max_size=64), min_size=1, max_size=3)


def valid_body(path: str) -> st.SearchStrategy[dict[str, Any]]:
    """Bodies the service accepts, for the operation at `path`."""
    if path in ("/predict", "/grad"):
        return st.builds(
            lambda field, r, named: {field: r, **({"model": MODEL, "version": 1} if named else {})},
            st.sampled_from(["inputs", "instances"]),
            rows,
            st.booleans(),
        )
    if path.startswith("/v1/"):
        return st.builds(
            lambda form, r, signature: {
                **({"instances": r} if form == "row" else {}),
                **({"inputs": r} if form == "columnar" else {}),
                **({"inputs": {"inputs": r}} if form == "named" else {}),
                **({"signature_name": signature} if signature else {}),
            },
            st.sampled_from(["row", "columnar", "named"]),
            rows,
            st.sampled_from([None, "serving_default", "serve", "grad"]),
        )
    return st.builds(
        lambda r, outputs: {
            "inputs": [
                {
                    "name": "inputs",
                    "shape": [len(r), 64],
                    "datatype": "FP32",
                    "data": [v for row in r for v in row],
                }
            ],
            **({"outputs": [{"name": name} for name in outputs]} if outputs else {}),
        },
        rows,
        st.lists(st.sampled_from(["outputs", *GRAD_OUTPUTS]), max_size=3, unique=True),
    )


def steer(case: Any, how: str, body: dict[str, Any] | None) -> None:
    """Point a generated case at the served model (and, for `valid`, give it a valid body)."""
    if how == "generated":
        return
    if case.path_parameters:
        if "name" in case.path_parameters:
            case.path_parameters["name"] = MODEL
        if "version" in case.path_parameters:
            case.path_parameters["version"] = "1"
    if how == "valid" and body is not None:
        case.body = body
        case.media_type = "application/json"


def make_runner(
    operation: Any,
    method: DataGenerationMethod,
    examples: int,
    body_strategy: st.SearchStrategy[Any],
    record_call: Any,
) -> Any:
    """A hypothesis test calling `record_call` on `examples` cases generated for `operation`."""
    how = (
        st.sampled_from(["generated", "known-model", "valid"])
        if method is DataGenerationMethod.positive
        else st.just("generated")
    )

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],
    )
    @given(
        case=operation.as_strategy(data_generation_method=method),
        how=how,
        body=body_strategy,
    )
    def run(case: Any, how: str, body: dict[str, Any] | None) -> None:
        record_call(case, how, body)

    return run


def test_fuzzing_every_operation_gives_no_5xx_and_only_documented_responses(
    live: support.ServerProcess,
) -> None:
    schema = schemathesis.from_uri(
        f"{live.url}/openapi.json", base_url=live.url, force_schema_version="30"
    )
    session = requests.Session()
    statuses: Counter[int] = Counter()
    per_operation: Counter[str] = Counter()
    failures: list[str] = []
    start = time.monotonic()

    def record_call(case: Any, how: str, body: dict[str, Any] | None) -> None:
        steer(case, how, body)
        name = case.operation.verbose_name
        per_operation[name] += 1
        try:
            response = case.call_and_validate(session=session, timeout=30)
        except Exception as exc:  # a failed check: collected, reported at the end
            failures.append(f"{name} ({how}): {str(exc)[:1500]}")
            return
        statuses[response.status_code] += 1
        try:
            support.check_no_leak(response.content, name)
        except AssertionError as exc:
            failures.append(f"{name} ({how}): {str(exc)[:1500]}")

    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20, [op.verbose_name for op in operations]
    for operation in operations:
        has_body = operation.body is not None and len(operation.body) > 0
        plans = [
            (
                DataGenerationMethod.positive,
                BODY_EXAMPLES if has_body else PATH_EXAMPLES if operation.path_parameters else 1,
            )
        ]
        if operation.path in NEGATIVE_PATHS:
            plans.append((DataGenerationMethod.negative, NEGATIVE_EXAMPLES))
        body_strategy = valid_body(operation.path) if has_body else st.none()
        for method, examples in plans:
            call = make_runner(operation, method, examples, body_strategy, record_call)
            try:
                call()
            except (SkipTest, hypothesis.errors.Unsatisfiable) as exc:
                pytest.fail(f"{operation.verbose_name}: no {method.name} data: {exc}")

    total = sum(per_operation.values())
    seconds = time.monotonic() - start
    support.record("schemathesis operations fuzzed", len(operations))
    support.record("schemathesis requests generated", total)
    support.record("schemathesis 5xx responses", sum(n for s, n in statuses.items() if s >= 500))
    support.record("schemathesis responses failing a check", len(failures))
    support.record(
        "schemathesis status codes seen",
        ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items())),
    )
    support.record("schemathesis run time (s)", round(seconds, 1))
    assert not failures, f"{len(failures)} failed checks; first ones:\n" + "\n\n".join(failures[:5])
    assert total >= MIN_REQUESTS, per_operation
    assert not [s for s in statuses if s >= 500], statuses
    assert statuses[200] >= 200, statuses  # the steered share reached the model
    assert live.process.poll() is None
