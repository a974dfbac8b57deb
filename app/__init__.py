"""The diffround model service: FastAPI + uvicorn, serving exported SavedModels.

It reads only what `model/` exports (the SavedModel layout and metadata of
docs/contract.md, section 2) and never imports `diffround` or `model`.
"""
