# The one image of every role: gateway, worker, flower and the migrate job (docker-compose.yml).
# Pinned to a patch release (and Debian release): rebuilds get the same interpreter.
# BASE_IMAGE: another base with `python` and `pip` on PATH (deploy/compose-check builds one with
# debootstrap, without any image registry).
ARG BASE_IMAGE=python:3.11.11-slim-bookworm
FROM ${BASE_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first (their own layer: rebuilt only when the lock changes): the exact versions
# and hashes of requirements.lock (pip-compile output of pyproject.toml; docs/operations.md).
COPY requirements.lock ./
RUN pip install --require-hashes --no-deps -r requirements.lock

# The project itself. Editable, because `delivery migrate` reads alembic.ini and migrations/
# beside the packages.
COPY . .
RUN pip install --no-deps -e . \
 && useradd --system --create-home --uid 10001 delivery \
 && mkdir -p /data \
 && chown delivery:delivery /data

USER delivery
ENV DELIVERY_DATA_DIR=/data
EXPOSE 8765 9100 5555
CMD ["delivery", "--help"]
