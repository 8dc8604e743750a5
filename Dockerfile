# syntax=docker/dockerfile:1
# One image for every yellowcart process; the command picks which:
#   docker run yellowcart serve order        docker run yellowcart gateway --upstream=...
# Two stages: `build` installs the locked dependencies (deploy/requirements.txt, exported from
# uv.lock with hashes) into a virtualenv; `runtime` gets that virtualenv and the source, runs as
# a numeric non-root user, and carries no pip, no compiler and no local broker.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY deploy/requirements.txt ./
# --require-hashes: every wheel must match the lock; --only-binary: nothing is compiled here
RUN python -m venv /opt/yellowcart \
 && /opt/yellowcart/bin/pip install --require-hashes --no-deps --only-binary=:all: \
      -r requirements.txt \
 && /opt/yellowcart/bin/pip uninstall --yes pip setuptools

FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/yellowcart/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    YELLOWCART_ENVIRONMENT=production \
    YELLOWCART_HTTP_HOST=0.0.0.0 \
    YELLOWCART_HTTP_PORT=8000 \
    YELLOWCART_DATA_DIR=/tmp/yellowcart
RUN groupadd --system --gid 10001 yellowcart \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --shell /usr/sbin/nologin yellowcart
COPY --from=build /opt/yellowcart /opt/yellowcart
WORKDIR /app
COPY shared ./shared
COPY services ./services
COPY operations ./operations
# bytecode written now, as root, so a read-only root filesystem costs no start-up time
RUN python -m compileall -q /app
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health/live', timeout=2)"]
ENTRYPOINT ["python", "-m", "operations"]
CMD ["--help"]
