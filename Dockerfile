# The hpo image: agents (the default command), the controller and the web view.
#
#   docker build -t hpo .                                    # Debian, Python 3.11, CPU
#   docker build -t hpo:cuda \
#     --build-arg BASE_IMAGE=nvidia/cuda:12.6.3-runtime-ubuntu24.04 .   # GPU agents
#   docker build -t hpo:png --build-arg WITH_CHROMIUM=1 .    # PNG plots in reports
#
# BuildKit is needed (the default builder since Docker 23): the build mounts its
# secrets and the wheel stage instead of copying them into layers. Behind a proxy
# that re-signs TLS, give pip the CA bundle as a secret; it is read at build time
# only and never stored in the image:
#   docker build --secret id=pip_cert,src=/etc/ssl/certs/ca-certificates.crt -t hpo .
# deploy/README.md says more (base images, volumes, the health check).

# Any Debian or Ubuntu image with Python >= 3.11, or none (apt installs it): the CUDA
# runtime images have no Python, and Ubuntu 22.04's is 3.10 (refused below).
ARG BASE_IMAGE=python:3.11-slim-bookworm

# ---- base: Python with venv, shared by every stage so that the venv built in the
# final stage and the wheels built for it match one interpreter.
FROM ${BASE_IMAGE} AS base
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive PYTHONDONTWRITEBYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# Versions are not pinned: Debian's mirrors keep only the current ones, so a pin
# breaks the build at the next security update; pin BASE_IMAGE by digest instead.
# hadolint ignore=DL3008
RUN if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then \
        apt-get update \
        && apt-get install -y --no-install-recommends python3 python3-venv \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else \
        "hpo needs Python >= 3.11; this BASE_IMAGE has " + sys.version.split()[0])'

# ---- requirements: the dependency list out of pyproject.toml. The next stage copies
# the list alone, and a copy is cached by its content: an edit to pyproject.toml that
# changes no dependency (a version, a linter's settings) rebuilds no wheel.
FROM base AS requirements
WORKDIR /build
COPY pyproject.toml ./
# The optional dependencies to install too: examples (scikit-learn, for the digits
# example) by default; "" for none, or a comma-separated list.
ARG HPO_EXTRAS=examples
RUN python3 -c 'import sys, tomllib; \
project = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
extras = [e for e in sys.argv[1].split(",") if e]; \
print("\n".join(project["dependencies"] \
                + [d for e in extras for d in project["optional-dependencies"][e]]))' \
        "$HPO_EXTRAS" > requirements.txt

# ---- wheels: every dependency as a wheel, compiled here where needed (hpbandster's
# netifaces has no wheel for Python 3.11). The code never reaches this stage, so a code
# change rebuilds nothing in it.
FROM base AS wheels
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Python.h comes with python:* images; Debian's and Ubuntu's python3 need python3-dev.
# hadolint ignore=DL3008
RUN headers=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["include"])') \
    && dev="" && if [ ! -f "$headers/Python.h" ]; then dev=python3-dev; fi \
    && apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev ${dev:+"$dev"} \
    && rm -rf /var/lib/apt/lists/*
COPY --from=requirements /build/requirements.txt /wheels/
# --use-pep517: hpbandster has only a setup.py, which an older pip (Debian's 23.0)
# would run without the wheel package; PEP 517 builds it with setuptools and wheel.
RUN --mount=type=secret,id=pip_cert \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
    && python3 -m venv /tmp/pip \
    && /tmp/pip/bin/pip wheel --no-cache-dir --use-pep517 --wheel-dir /wheels \
        -r /wheels/requirements.txt

# ---- dist: hpo itself, a pure-Python wheel (the only stage that sees the code).
FROM base AS dist
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /build
COPY pyproject.toml README.md ./
COPY hpo ./hpo
COPY controller ./controller
COPY agent ./agent
COPY strategies ./strategies
RUN --mount=type=secret,id=pip_cert \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
    && python3 -m venv /tmp/pip \
    && /tmp/pip/bin/pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

# ---- the image: no compiler, no build files; wheels installed from the stages above.
FROM base AS image
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# tini as PID 1: it forwards SIGTERM to the agent (whose warm shutdown lets running
# tasks finish) and reaps the orphans a training script leaves behind. git (and ssh for
# git@ remotes): an agent checks out a task's recorded commit when the image does not
# hold its script (agent/checkout.py).
# Chromium draws the PNGs of `hpo-controller report` (kaleido drives it); 1 installs
# Debian's package (Ubuntu's is a snap, which does not run in a container).
ARG WITH_CHROMIUM=0
# hadolint ignore=DL3008
RUN browser="" && if [ "$WITH_CHROMIUM" = 1 ]; then browser=chromium; fi \
    && apt-get update \
    && apt-get install -y --no-install-recommends tini ca-certificates git openssh-client \
        ${browser:+"$browser"} \
    && rm -rf /var/lib/apt/lists/*
# A user without a login, and the folders it writes: named volumes mounted on them
# start with their owner, so the user can write there.
RUN groupadd --system --gid 10001 hpo \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/hpo \
        --shell /usr/sbin/nologin hpo \
    && mkdir -p /var/lib/hpo /checkpoints /work \
    && chown hpo:hpo /var/lib/hpo /checkpoints /work
ENV VIRTUAL_ENV=/opt/hpo
ENV PATH=/opt/hpo/bin:$PATH
# Dependencies first: this layer is rebuilt only when the dependency list changes.
# --no-index --only-binary: everything comes from the wheels stage, nothing compiles.
RUN --mount=type=bind,from=wheels,source=/wheels,target=/wheels \
    python3 -m venv /opt/hpo \
    && pip install --no-cache-dir --no-index --only-binary=:all: --find-links=/wheels \
        -r /wheels/requirements.txt
RUN --mount=type=bind,from=dist,source=/dist,target=/dist \
    pip install --no-cache-dir --no-index --no-deps /dist/*.whl
COPY deploy/healthcheck.py /opt/hpo/bin/hpo-agent-healthcheck

# HPO_HOME (the agent's outbox, logs, and the SQLite store when no HPO_STORE_URL is
# set) on a volume, so that a new container keeps them.
ENV HPO_HOME=/var/lib/hpo
VOLUME ["/var/lib/hpo"]
# By number: Kubernetes' runAsNonRoot can check a numeric user only.
USER 10001:10001
WORKDIR /work

# Healthy while an hpo-agent runs here and the store holds a heartbeat of it younger
# than the lost-after period: the rule the reaper judges agents by, so "unhealthy"
# means what a lost agent means (deploy/healthcheck.py). Other commands (the ui, the
# controller) set their own check (docker-compose.yml).
HEALTHCHECK --interval=30s --timeout=15s --start-period=60s --retries=3 \
    CMD ["hpo-agent-healthcheck"]
ENTRYPOINT ["tini", "--"]
CMD ["hpo-agent", "--queue", "default"]
