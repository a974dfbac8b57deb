"""Training, export and benchmarking of models that round inside the network.

``model`` depends on ``diffround`` (the surrogates); the service (``app``)
depends only on what :mod:`model.export` writes: a SavedModel in TF Serving's
repository layout plus ``assets.extra/diffround.json``.
"""
