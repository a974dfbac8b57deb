"""Open Inference Protocol v2 (KServe, Triton): placeholder until the routes land."""

from fastapi import APIRouter

router = APIRouter(tags=["v2"])
