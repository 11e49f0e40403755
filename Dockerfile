# One image for every role: `docker run IMAGE api|consume|topics|replay ...`.
# Dependencies are installed from the pinned constraints before the source is copied, so a
# code change rebuilds only the last layers.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/parcours
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
# Install the dependencies alone: an empty package with the real metadata.
RUN mkdir -p models service consumers \
    && touch models/__init__.py service/__init__.py consumers/__init__.py \
    && /opt/parcours/bin/pip install -c constraints.txt . \
    && /opt/parcours/bin/pip uninstall -y parcours
COPY models models
COPY service service
COPY consumers consumers
RUN /opt/parcours/bin/pip install --no-deps .

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PATH=/opt/parcours/bin:$PATH \
    PARCOURS_API_HOST=0.0.0.0 PARCOURS_LOG_FORMAT=json
RUN useradd --system --uid 10001 --no-create-home parcours
COPY --from=build /opt/parcours /opt/parcours
USER parcours
EXPOSE 8000 9464
# Healthy when the role answers: the API's /healthz, or a consumer's metrics endpoint.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 CMD ["python", "-c", \
    "import os, sys, urllib.request as u\nfor url in (f\"http://127.0.0.1:{os.environ.get('PARCOURS_API_PORT', '8000')}/healthz\", f\"http://127.0.0.1:{os.environ.get('PARCOURS_CONSUMER_METRICS_PORT', '9464')}/metrics\", f\"http://127.0.0.1:{os.environ.get('PARCOURS_MODELS_TRAINER_METRICS_PORT', '9465')}/metrics\"):\n    try:\n        u.urlopen(url, timeout=2); sys.exit(0)\n    except OSError:\n        pass\nsys.exit(1)"]
ENTRYPOINT ["parcours"]
CMD ["api"]
