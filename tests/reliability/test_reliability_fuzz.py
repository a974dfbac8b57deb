"""Property-based fuzzing of the live service from its own OpenAPI spec (schemathesis 4).

Every operation in `/openapi.json` gets requests generated from the spec
(schemathesis' positive data, and its negative data where the spec allows it),
a share of them steered to the served model's name and version and to bodies
that pass validation, so that the 200 answers' schemas are checked too. Each
response goes through every check schemathesis 4 has (`CHECKS`: no 5xx,
documented status code, content type, headers and body schema, negative data
rejected, missing required headers, unsupported methods and their `Allow`
header, ...) and must not leak a traceback or a path. The check that the spec
is not looser than the server (`positive_data_acceptance`: a request the spec
allows must not be refused with a 4xx) is collected on its own, over the cases
as generated: the spec is exact for the served model (its own TF Serving and v2
operations, a `/predict` body built from its signatures; issue 12, finding 8),
so none may be refused. Generation is derandomized, so a failure reproduces.
"""

from __future__ import annotations

import re
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
from schemathesis import GenerationMode
from schemathesis.checks import CHECKS, load_all_checks

MODEL = "digit-bits"
MIN_REQUESTS = 2000
#: Examples per operation: with a JSON body, with path parameters only, with neither.
# (Generating bodies of rows of numbers is what costs time; path-only operations are cheap.)
BODY_EXAMPLES, PATH_EXAMPLES, NEGATIVE_EXAMPLES = 125, 125, 60
#: Operations whose negative (schema-violating) data schemathesis can generate quickly.
NEGATIVE_PATHS = ("/predict", "/grad")

values = st.integers(0, 16) | st.floats(0.0, 16.0, width=32)


def valid_body(path: str, served: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Bodies the service accepts, for the operation at `path`.

    Args:
        path: The operation's path template.
        served: The served model's metadata (`GET /models/{name}`): its input name and
            every output it can answer (`serving_default`'s and the `grad` keys).
    """
    signatures = served["signatures"]
    (input_spec,) = signatures["serving_default"]["inputs"]
    name = input_spec["name"]
    outputs = sorted({o["name"] for spec in signatures.values() for o in spec["outputs"]})
    width = input_spec["shape"][1]
    rows = st.lists(st.lists(values, min_size=width, max_size=width), min_size=1, max_size=3)
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
                **({"inputs": {name: r}} if form == "named" else {}),
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
                    "name": name,
                    "shape": [len(r), width],
                    "datatype": "FP32",
                    "data": [v for row in r for v in row],
                }
            ],
            **({"outputs": [{"name": name} for name in outputs]} if outputs else {}),
        },
        rows,
        st.lists(st.sampled_from(outputs), max_size=3, unique=True),
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
    method: GenerationMode,
    examples: int,
    body_strategy: st.SearchStrategy[Any],
    record_call: Any,
) -> Any:
    """A hypothesis test calling `record_call` on `examples` cases generated for `operation`."""
    how = (
        st.sampled_from(["generated", "known-model", "valid"])
        if method is GenerationMode.POSITIVE
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
        case=operation.as_strategy(generation_mode=method),
        how=how,
        body=body_strategy,
    )
    def run(case: Any, how: str, body: dict[str, Any] | None) -> None:
        record_call(case, how, body)

    return run


def _error_kind(response: requests.Response) -> str:
    """A refusal's message with the quoted generated values blanked (to count unique ones)."""
    try:
        message = str(response.json().get("error", ""))
    except ValueError:
        message = response.text
    return re.sub(r"'[^']*'", "'...'", message)[:120]


class Run:
    """One fuzzing run over every operation, shared by the tests below (it takes a while)."""

    def __init__(self, live: support.ServerProcess) -> None:
        load_all_checks()
        acceptance = CHECKS.get_one("positive_data_acceptance")
        rejection = CHECKS.get_one("negative_data_rejection")
        self.checks = [check for check in CHECKS.get_all() if check is not acceptance]
        # A steered case's body or path is the test's, not the generator's: whether the
        # spec allows it says nothing about the spec, so the two data checks skip it.
        self.steered_checks = [check for check in self.checks if check is not rejection]
        self.acceptance = [acceptance]
        self.schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
        self.session = requests.Session()
        self.statuses: Counter[int] = Counter()
        self.per_operation: Counter[str] = Counter()
        self.failures: list[str] = []
        self.rejected_valid: Counter[str] = Counter()
        self.operations = [result.ok() for result in self.schema.get_all_operations()]
        self.served = self.session.get(f"{live.url}/models/{MODEL}", timeout=30).json()
        self.seconds = 0.0

    def record_call(self, case: Any, how: str, body: dict[str, Any] | None) -> None:
        steer(case, how, body)
        name = case.operation.label
        self.per_operation[name] += 1
        try:
            response = case.call(session=self.session, timeout=30)
        except requests.RequestException as exc:
            self.failures.append(f"{name} ({how}): {type(exc).__name__}: {exc}")
            return
        self.statuses[response.status_code] += 1
        # 413 (a batch over MAX_BATCH_ROWS, the spec's `maxItems`) is a rejection, which
        # schemathesis' negative-data check does not count among its expected statuses.
        rejected = response.status_code == 413
        plain = how == "generated" and not rejected
        judged = [(self.checks if plain else self.steered_checks, None)]
        if how == "generated":
            # Steering changes a case behind the spec's back (a template's `name` set to a
            # served model, which the spec excludes): only cases as generated are judged
            # for acceptance.
            judged.append((self.acceptance, self.rejected_valid))
        for checks, failed in judged:
            try:
                case.validate_response(response, checks=checks)
            except (Exception, BaseExceptionGroup) as exc:  # failed checks: collected below
                text = f"{name} ({how}) {response.status_code}: {str(exc)[:1500]}"
                if failed is None:
                    self.failures.append(text)
                else:
                    failed[f"{name} {response.status_code}: {_error_kind(response)}"] += 1
        try:
            support.check_no_leak(response.content, name)
        except AssertionError as exc:
            self.failures.append(f"{name} ({how}): {str(exc)[:1500]}")

    def run(self) -> None:
        start = time.monotonic()
        for operation in self.operations:
            has_body = operation.body is not None and len(operation.body) > 0
            plans = [
                (
                    GenerationMode.POSITIVE,
                    BODY_EXAMPLES
                    if has_body
                    else PATH_EXAMPLES
                    if operation.path_parameters
                    else 1,
                )
            ]
            if operation.path in NEGATIVE_PATHS:
                plans.append((GenerationMode.NEGATIVE, NEGATIVE_EXAMPLES))
            body_strategy = valid_body(operation.path, self.served) if has_body else st.none()
            for method, examples in plans:
                call = make_runner(operation, method, examples, body_strategy, self.record_call)
                try:
                    call()
                except hypothesis.errors.Unsatisfiable as exc:
                    pytest.fail(f"{operation.label}: no {method.value} data: {exc}")
        self.seconds = time.monotonic() - start


@pytest.fixture(scope="module")
def fuzzed(live: support.ServerProcess) -> Run:
    run = Run(live)
    run.run()
    total = sum(run.per_operation.values())
    support.record("schemathesis version", schemathesis.__version__)
    support.record("schemathesis operations fuzzed", len(run.operations))
    support.record("schemathesis requests generated", total)
    support.record(
        "schemathesis 5xx responses", sum(n for s, n in run.statuses.items() if s >= 500)
    )
    support.record("schemathesis responses failing a check", len(run.failures))
    support.record(
        "schemathesis schema-valid requests refused (positive_data_acceptance)",
        f"{sum(run.rejected_valid.values())} ({len(run.rejected_valid)} unique)",
    )
    support.record(
        "schemathesis status codes seen",
        ", ".join(f"{s}: {n}" for s, n in sorted(run.statuses.items())),
    )
    support.record("schemathesis run time (s)", round(run.seconds, 1))
    return run


def test_fuzzing_every_operation_gives_no_5xx_and_only_documented_responses(
    live: support.ServerProcess, fuzzed: Run
) -> None:
    statuses = fuzzed.statuses
    assert len(fuzzed.operations) >= 20, [op.label for op in fuzzed.operations]
    assert not fuzzed.failures, f"{len(fuzzed.failures)} failed checks; first ones:\n" + (
        "\n\n".join(fuzzed.failures[:5])
    )
    assert sum(fuzzed.per_operation.values()) >= MIN_REQUESTS, fuzzed.per_operation
    assert not [s for s in statuses if s >= 500], statuses
    assert statuses[200] >= 200, statuses  # the steered share reached the model
    assert live.process.poll() is None


def test_every_request_the_spec_allows_is_accepted(fuzzed: Run) -> None:
    assert not fuzzed.rejected_valid, "\n".join(
        f"{count} x {what}" for what, count in fuzzed.rejected_valid.most_common(20)
    )
