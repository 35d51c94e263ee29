# The one image of every role: gateway, worker, flower and the migrate job (docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first (their own layer: rebuilt only when pyproject.toml changes).
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml','rb'))['project']['dependencies']))" > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

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
