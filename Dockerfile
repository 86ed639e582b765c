# One image for every service; the command picks it: `producer`, `consume dynamodb`,
# `consume s3`, `provision`, `exchange`, ... (ENTRYPOINT is the `crypto-live` console script).
# The base is pinned by tag; pin it by digest too where the registry can be reached
# (`docker buildx imagetools inspect python:3.11-slim-bookworm`), e.g. with --build-arg.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first, from a lock file of every dependency with its hashes (`make lock`), so
# builds are reproducible and a code change reuses this layer; wheels only, so the builder needs
# no compiler either.
# No extras by default: moto (the `embedded` extra, for `crypto-live up` without an endpoint and
# for the tests) stays out; `--build-arg EXTRAS=embedded` adds it (to compare image sizes), from
# requirements-embedded.lock.
ARG EXTRAS=
COPY requirements.lock requirements-embedded.lock ./
RUN lock="requirements${EXTRAS:+-$EXTRAS}.lock" \
 && { [ -f "$lock" ] || { echo "no lock file $lock for EXTRAS=$EXTRAS" >&2; exit 1; }; } \
 && pip install --require-hashes --no-deps --only-binary=:all: -r "$lock"
COPY pyproject.toml README.md ./
COPY core ./core
COPY crypto_live ./crypto_live
COPY producer ./producer
COPY consumers ./consumers
COPY schemas ./schemas
RUN pip install --no-deps . \
 && python -m compileall -q /opt/venv

FROM ${PYTHON_IMAGE} AS runtime
# No compiler, no pip cache, no sources: only the virtualenv from the builder.
RUN groupadd --system --gid 10001 crypto-live \
 && useradd --system --uid 10001 --gid crypto-live --no-create-home --home-dir /nonexistent \
    --shell /usr/sbin/nologin crypto-live
COPY --from=builder /opt/venv /opt/venv
# METRICS_PORT unset: each service's own default (producer 9000, consume dynamodb 9001,
# consume s3 9002), so they also run side by side with host networking. The port actually
# served (a taken one falls back to a free one) goes to METRICS_PORT_FILE for the health check.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    METRICS_PORT_FILE=/tmp/crypto-live-metrics.port
# Numeric, so runtimes that enforce "non-root" can check it without /etc/passwd.
USER 10001:10001
EXPOSE 9000 9001 9002
# /healthz of this container's service (503 when stalled), on the port in METRICS_PORT_FILE,
# else METRICS_PORT; the slim image has no curl.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["crypto-live", "healthcheck"]
ENTRYPOINT ["crypto-live"]
CMD ["--help"]
