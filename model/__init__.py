"""Training, export and benchmarking of models that round inside the network.

``model`` depends on ``diffround`` (the surrogates); the service (``app``)
depends only on what :func:`diffround.export` writes (published by
:mod:`model.export`): a SavedModel in TF Serving's repository layout plus
``assets.extra/diffround.json``.
"""
