# One image for every role: `docker run IMAGE api|consume|train|dispatch`, and the one-shot
# `topics` and `replay` commands. Build it from the repository root: `docker build -t parcours .`
#
# Two stages: the first installs the pinned dependencies and the package into a virtualenv;
# the second copies only that virtualenv onto a clean slim Python, without pip's caches or the
# build context, and runs it as an unprivileged user.
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/parcours
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
# The dependencies alone first (an empty package with the real metadata), so that a change to
# the source rebuilds only the layers below; every dependency ships a manylinux wheel, so no
# compiler is needed.
RUN mkdir -p models service consumers \
    && touch models/__init__.py service/__init__.py consumers/__init__.py \
    && /opt/parcours/bin/pip install -c constraints.txt . \
    && /opt/parcours/bin/pip uninstall -y parcours
COPY models models
COPY service service
COPY consumers consumers
RUN /opt/parcours/bin/pip install --no-deps . \
    && /opt/parcours/bin/pip uninstall -y pip
COPY deploy/docker/healthcheck.py /opt/parcours/healthcheck.py

FROM python:3.11-slim-bookworm
# Containers bind every interface and log one JSON object per line; every other setting is a
# PARCOURS_* variable given at run time (see the README's Configuration table).
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PATH=/opt/parcours/bin:$PATH \
    PARCOURS_API_HOST=0.0.0.0 PARCOURS_LOG_FORMAT=json
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin parcours
COPY --from=build /opt/parcours /opt/parcours
# Numeric, so that Kubernetes can check `runAsNonRoot` against the image.
USER 10001
# API, then the /metrics ports of consume, train and dispatch (PARCOURS_*_METRICS_PORT).
EXPOSE 8000 9464 9465 9466
# Healthy when this container's role answers: the API's /healthz or a worker's /metrics.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "/opt/parcours/healthcheck.py"]
ENTRYPOINT ["parcours"]
CMD ["api"]
