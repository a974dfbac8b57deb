"""The OpenAPI spec says exactly what the served models accept (issue 12, finding 8).

Each served model gets its own TF Serving and v2 operations and a `/predict`
alternative built from its signatures; a body the spec allows is accepted, and
the bodies the server refuses are outside the spec.
"""

from pathlib import Path

import jsonschema
import pytest
from svc_helpers import digit_rows, make_settings, serving


def _validator(spec: dict, path: str) -> jsonschema.Draft202012Validator:
    schema = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
    resolver_schema = {**schema, "components": spec["components"]}
    return jsonschema.Draft202012Validator(resolver_schema)


ROW = digit_rows(1, seed=0)[0].tolist()


@pytest.mark.parametrize(
    ("path", "body", "allowed"),
    [
        ("/predict", {"inputs": [ROW]}, True),
        ("/predict", {"instances": [ROW, ROW]}, True),
        ("/predict", {"model": "digit-bits", "version": 1, "inputs": {"inputs": [ROW]}}, True),
        ("/predict", {"inputs": [ROW[:63]]}, False),
        ("/predict", {"inputs": [ROW], "instances": [ROW]}, False),
        ("/predict", {"inputs": None, "instances": None}, False),
        ("/predict", {"inputs": [ROW], "extra": 1}, False),
        ("/predict", {"model": "digit-bits", "version": 2, "inputs": [ROW]}, False),
        ("/predict", {"instances": [ROW, {"inputs": ROW}]}, False),
        ("/v1/models/digit-bits:predict", {"instances": [ROW]}, True),
        ("/v1/models/digit-bits:predict", {"signature_name": "grad", "inputs": [ROW]}, True),
        ("/v1/models/digit-bits:predict", {"instances": []}, False),
        ("/v1/models/digit-bits:predict", {"instances": [{}]}, False),
        (
            "/v2/models/digit-bits/infer",
            {"inputs": [{"name": "inputs", "shape": [1, 64], "datatype": "FP32", "data": ROW}]},
            True,
        ),
        (
            "/v2/models/digit-bits/infer",
            {
                "inputs": [{"name": "inputs", "shape": [1, 64], "datatype": "FP32", "data": ROW}],
                "outputs": [{"name": "outputs"}, {"name": "outputs"}],
            },
            False,
        ),
        ("/v2/models/digit-bits/infer", {"inputs": []}, False),
    ],
)
def test_the_spec_allows_what_the_server_accepts(
    models_root: Path, path: str, body: dict, allowed: bool, run
) -> None:
    async def go():
        async with serving(make_settings(models_root)) as client:
            spec = (await client.get("/openapi.json")).json()
            return spec, await client.post(path, json=body)

    spec, response = run(go())
    valid = _validator(spec, path).is_valid(body)
    assert valid == allowed
    assert (response.status_code == 200) == allowed, response.text


def test_templates_name_no_served_model_and_keep_the_envelope(models_root: Path, run) -> None:
    async def go():
        async with serving(make_settings(models_root)) as client:
            return (await client.get("/openapi.json")).json()

    spec = run(go())
    template = spec["paths"]["/v1/models/{name}:predict"]["post"]
    (name,) = [p for p in template["parameters"] if p["name"] == "name"]
    assert name["schema"]["not"] == {"enum": ["digit-bits"]}
    envelope = _validator(spec, "/v1/models/{name}:predict")
    assert envelope.is_valid({"instances": [1]})
    assert not envelope.is_valid({"instances": [1], "inputs": [1]})
    assert not envelope.is_valid({"rows": [1]})
    assert "/v2/models/digit-bits/versions/1/infer" in spec["paths"]
