# syntax=docker/dockerfile:1
# cfstream: one image for every role, chosen by the command.
#
#   docker build -t cfstream .
#   docker run --rm cfstream                                   # --help
#   docker run -v cfstream-state:/var/lib/cfstream \
#       -e CFSTREAM_BOOTSTRAP_SERVERS=kafka:9092 cfstream processor
#   docker run -e CFSTREAM_BOOTSTRAP_SERVERS=kafka:9092 \
#       cfstream worker cfstream.examples.notifications       # worker MODULE [MODULE...]
#   docker run -e CFSTREAM_BOOTSTRAP_SERVERS=kafka:9092 cfstream topics create
#
# Configuration is only through CFSTREAM_* environment variables (cfstream/settings.py).
# The processor keeps RocksDB state in CFSTREAM_STATE_DIR (/var/lib/cfstream here): give each
# replica its own persistent volume there, or it replays its tables from Kafka on every start.
# Your own tasks: build FROM this image and `pip install` the package with your task modules.

ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# Every dependency ships wheels for x86_64 and arm64; the compiler is for other architectures.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/cfstream
WORKDIR /src
COPY pyproject.toml README.md ./
COPY cfstream ./cfstream
RUN /opt/cfstream/bin/pip install '.[otel]'

FROM python:${PYTHON_VERSION}-slim
LABEL org.opencontainers.image.title="cfstream" \
      org.opencontainers.image.description="Delayed and debounced task execution on Apache Kafka" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed numeric uid, so Kubernetes' runAsNonRoot can verify it without a passwd lookup.
ARG UID=10001
RUN groupadd --system --gid "${UID}" cfstream \
    && useradd --system --uid "${UID}" --gid cfstream --home-dir /var/lib/cfstream \
        --no-create-home --shell /usr/sbin/nologin cfstream \
    && install -d -o cfstream -g cfstream -m 0750 /var/lib/cfstream
COPY --from=build /opt/cfstream /opt/cfstream
ENV PATH=/opt/cfstream/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CFSTREAM_STATE_DIR=/var/lib/cfstream \
    CFSTREAM_HTTP_PORT=9464
USER ${UID}:${UID}
WORKDIR /var/lib/cfstream
# /metrics, /healthz, /readyz
EXPOSE 9464
# Exec form: cfstream is PID 1 and receives SIGTERM itself for its graceful shutdown.
ENTRYPOINT ["cfstream"]
CMD ["--help"]
