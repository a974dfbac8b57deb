"""TensorFlow Serving's REST API: placeholder until the routes land."""

from fastapi import APIRouter

router = APIRouter(tags=["tfserving"])
