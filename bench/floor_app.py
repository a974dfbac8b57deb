"""The HTTP floor: a trivial FastAPI JSON endpoint on the service's server configuration.

Not part of the service's API: the benchmark serves it from its own process
(`python -m bench.serve_asgi bench.floor_app:app`) to measure what the HTTP
stack alone costs per request (same wrk script, same 1-row POST body).
"""

from fastapi import FastAPI

app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)


@app.post("/predict")
async def predict() -> dict:
    """A constant answer the shape of `/predict`'s, without reading the body."""
    return {"model": "floor", "version": 1, "outputs": {"bits": [[0, 0, 1, 1]]}, "decoded": [3]}


@app.get("/readyz")
async def readyz() -> dict:
    return {"status": "ready"}
