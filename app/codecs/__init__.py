"""Protocol codecs over the data plane: bytes in, bytes out, no web framework.

Each codec reads one protocol's request body (native `/predict` and `/grad`,
TF Serving's `/v1`, the Open Inference Protocol's `/v2`) into an
`InferenceRequest`, lets `app.dataplane.DataPlane` validate and run it, and
writes the protocol's response body. The FastAPI routers in `app/api/` are
thin wrappers around these functions, so any front end that hands over the
body and headers gets the same behaviour and the same errors.
"""
