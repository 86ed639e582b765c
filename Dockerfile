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
# Dependencies first (pinned in pyproject.toml), so a code change reuses this layer; wheels only,
# so the builder needs no compiler either.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
 && pip install --only-binary=:all: -r requirements.txt
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
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    METRICS_PORT=9000
# Numeric, so runtimes that enforce "non-root" can check it without /etc/passwd.
USER 10001:10001
EXPOSE 9000
# /healthz of the service (503 when stalled); the slim image has no curl, so Python does it.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('METRICS_PORT', '9000'), timeout=4)"]
ENTRYPOINT ["crypto-live"]
CMD ["--help"]
