# The diffround service with its default model, trained at build time.
#
#   docker build -t diffround .                         # base: python:3.11-slim
#   docker build --build-arg BASE_IMAGE=... -t diffround .  # any Debian-like base with python3.11 + venv
#
# Offline builds: docker/wheels.sh fills docker/wheels/ with the pinned wheels;
# when it holds any, they are installed with --no-index (build with
# --network none). Without it, pip installs the same pins from PyPI.
# Legacy-builder compatible (no BuildKit features).

ARG BASE_IMAGE=python:3.11-slim

# ---------------------------------------------------------------- build stage
FROM ${BASE_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH

# python3 -m venv works for python:3.11-slim and for Debian's python3 (whose
# pip refuses system-wide installs, PEP 668).
RUN python3 -m venv /opt/venv

# The pinned dependencies first, so code changes reuse this layer.
# `docker/wheel[s]` matches nothing when the optional wheelhouse is absent.
# TensorFlow's C++ headers (~290 MB) only serve to compile custom ops: dropped.
COPY docker/requirements.lock docker/wheel[s] /wheels/
RUN if ls /wheels/*.whl >/dev/null 2>&1; then set -- --no-index --find-links /wheels; fi \
    && pip install "$@" --requirement /wheels/requirements.lock \
    && rm -rf /wheels \
    && rm -rf /opt/venv/lib/python3.11/site-packages/tensorflow/include

WORKDIR /src
COPY pyproject.toml README.md ./
COPY diffround ./diffround
COPY model ./model
COPY app ./app
RUN pip install --no-deps --no-build-isolation . \
    && rm -rf build ./*.egg-info

# The default model, trained with the arguments `make train` uses: the Makefile's
# TRAIN_ARGS (docker/train_args.py reads them; no make in the image), unless
# --build-arg TRAIN_ARGS=... says otherwise. Digits ship with scikit-learn, so
# this needs no network. The arguments are kept for the compose `train` service.
COPY Makefile ./
COPY docker/train_args.py ./docker/
ARG TRAIN_ARGS=
ENV MPLCONFIGDIR=/tmp/matplotlib \
    KERAS_HOME=/tmp/keras \
    TF_CPP_MIN_LOG_LEVEL=2
# $args is a list of words: split it on purpose.
# hadolint ignore=SC2086
RUN args="${TRAIN_ARGS:-$(python docker/train_args.py Makefile)}" \
    && echo "python -m model.train $args --models-root /models" \
    && python -m model.train $args --models-root /models \
    && mkdir -p /opt/diffround \
    && printf '%s\n' "$args" > /opt/diffround/train-args

# -------------------------------------------------------------- runtime stage
FROM ${BASE_IMAGE}

ARG UID=10001
RUN groupadd --gid ${UID} diffround \
    && useradd --uid ${UID} --gid ${UID} --no-log-init --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin diffround

COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/diffround /opt/diffround
COPY --from=build --chown=${UID}:${UID} /models /models

# Settings are the service's environment variables (docs/contract.md, section 4).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    KERAS_HOME=/tmp/keras \
    MPLCONFIGDIR=/tmp/matplotlib \
    HOST=0.0.0.0 \
    PORT=8000 \
    MODELS_ROOT=/models

USER ${UID}:${UID}
# A root-owned, empty working directory: `python -m` puts it first on sys.path.
WORKDIR /srv
VOLUME ["/models"]
EXPOSE 8000

# Healthy = ready (GET /readyz answers 200: a model is loaded). No curl in slim
# images: urllib raises on 503 or a refused connection, so the exit code says it.
HEALTHCHECK --interval=10s --timeout=5s --start-period=90s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '8000') + '/readyz', timeout=4)"]

CMD ["python", "-m", "app"]
