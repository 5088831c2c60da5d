#!/usr/bin/env bash
# The image test (issue 12): build the hpo image FROM an offline Debian base, start the
# stack of docker-compose.yml with it, run the digits example through two containerised
# agents, and check from the store that every job completed.
#
#   deploy/image-test.sh     # tests/test_image.py runs it when a Docker engine answers
#
# Needs a running dockerd, mmdebstrap and docker-compose (v1) or `docker compose`. On
# this project's machines (no registry reachable, Debian's mirror and PyPI are):
#   apt-get install -y docker.io mmdebstrap docker-compose
#   dockerd --storage-driver=vfs --iptables=false --ip6tables=false --bridge=none &
# With no bridge every container shares the host's network, which
# deploy/image-test.compose.yml (used by this script only) says for each service.
#
# Steps: (a) base image: `mmdebstrap --variant=minbase` of bookworm with Python, then
# `docker import` (no registry needed); (b) the hpo image FROM it (BASE_IMAGE), pip given
# the host's CA bundle as a build secret; (c) PostgreSQL and Redis from the same base
# with Debian's packages, on ports of their own (the host's may hold the defaults);
# `up` with two agents, and the ui, waiting until every container is healthy;
# (d) `run controller` (the digits example), then `hpo-controller status` from the store.
#
# Environment: HPO_TEST_RESULT=FILE writes the measured times as JSON; HPO_TEST_KEEP=1
# leaves the stack up; HPO_TEST_REBUILD=1 rebuilds the base and services images (kept
# between runs: they change only with Debian); HPO_TEST_CA=FILE is the CA bundle for pip
# (default /etc/ssl/certs/ca-certificates.crt when it exists); HPO_TEST_PG_PORT,
# HPO_TEST_REDIS_PORT, HPO_TEST_UI_PORT move the services (55432, 56379, 58080).
# Exit 0: passed; 1: failed; 77: a prerequisite is missing (the pytest skips on it).
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_IMAGE=hpo-offline-base:bookworm
SERVICES_IMAGE=hpo-offline-services:bookworm
HPO_IMAGE=hpo:image-test
PROJECT=hpo-image-test
AGENTS=2
MIRROR=${HPO_TEST_MIRROR:-http://deb.debian.org/debian}
PG_PORT=${HPO_TEST_PG_PORT:-55432}
REDIS_PORT=${HPO_TEST_REDIS_PORT:-56379}
UI_PORT=${HPO_TEST_UI_PORT:-58080}
CA=${HPO_TEST_CA:-/etc/ssl/certs/ca-certificates.crt}
CONFIG=examples/digits/hpo.yaml
JOBS=$(awk '/^total_max_jobs:/ {print $2}' "$CONFIG")

say() { echo "image-test: $*" >&2; }
skip() { say "skipped: $*"; exit 77; }
failure=""
fail() { failure=$*; say "FAILED: $*"; exit 1; }

# ---- prerequisites: missing ones are a skip, not a failure
docker info >/dev/null 2>&1 || skip "no Docker engine answers (docker info)"
command -v mmdebstrap >/dev/null || skip "mmdebstrap is missing (apt-get install mmdebstrap)"
if command -v docker-compose >/dev/null; then
  COMPOSE=(docker-compose)
elif docker compose version >/dev/null 2>&1; then
  COMPOSE=(docker compose)
else
  skip "neither docker-compose nor docker compose (apt-get install docker-compose)"
fi
# The Dockerfile mounts secrets and stages (RUN --mount): BuildKit only. Clients from
# Docker 23 on need the buildx plugin for it; older ones have it inside.
BUILD=()
if docker buildx version >/dev/null 2>&1; then
  BUILD=(docker buildx build --load)
else
  while read -r client; do
    version=$("$client" version --format '{{.Client.Version}}' 2>/dev/null) || continue
    if [[ ${version%%.*} =~ ^[0-9]+$ ]] && (( ${version%%.*} < 23 )); then
      BUILD=(env DOCKER_BUILDKIT=1 "$client" build)
      break
    fi
  done < <(type -ap docker)
fi
(( ${#BUILD[@]} )) || skip "no BuildKit: install docker-buildx, or a docker client older than 23"
for port in "$PG_PORT" "$REDIS_PORT" "$UI_PORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    fail "port $port is in use: set HPO_TEST_PG_PORT, HPO_TEST_REDIS_PORT or HPO_TEST_UI_PORT"
  fi
done

work=$(mktemp -d)
# Creating a container copies the whole image with the vfs storage driver: on a busy
# machine that outlasts docker-compose v1's default 60 s wait for the engine.
export COMPOSE_HTTP_TIMEOUT=600
compose() {
  "${COMPOSE[@]}" -p "$PROJECT" --env-file "$work/env" \
    -f docker-compose.yml -f deploy/image-test.compose.yml "$@"
}
containers() { docker ps -aq --filter "label=com.docker.compose.project=$PROJECT"; }
cleanup() {
  local status=$?
  if [[ -f $work/env ]]; then
    if (( status != 0 )); then
      for container in $(containers); do
        say "the last 30 lines of $(docker inspect --format '{{.Name}}' "$container"):"
        docker logs --tail 30 "$container" 2>&1 | sed 's/^/    /' >&2 || true
      done
      [[ -z $failure ]] || say "FAILED: $failure"  # again, after the logs
    fi
    if [[ ${HPO_TEST_KEEP:-} == 1 ]]; then
      say "left up; to remove: docker rm -fv \$(docker ps -aq --filter" \
        "label=com.docker.compose.project=$PROJECT) && ${COMPOSE[*]} -p $PROJECT" \
        "--env-file $work/env -f docker-compose.yml -f deploy/image-test.compose.yml down -v"
      return
    fi
    containers | xargs -r docker rm -fv >/dev/null 2>&1 || true
    compose --profile controller down -v --remove-orphans >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

declare -A millis
timed() {  # timed NAME COMMAND...: run it, keep its wall time in millis[NAME]
  local name=$1 start
  shift
  start=$(date +%s%3N)
  "$@"
  millis[$name]=$(( $(date +%s%3N) - start ))
  say "$name: $(( millis[$name] / 1000 )) s"
}

# ---- (a) the base image, offline: a Debian root filesystem made by mmdebstrap
if [[ ${HPO_TEST_REBUILD:-} == 1 ]]; then
  docker rmi -f "$SERVICES_IMAGE" "$BASE_IMAGE" >/dev/null 2>&1 || true
fi
base_image() {
  mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$work/base.tar" "$MIRROR"
  docker import --change 'CMD ["/bin/bash"]' "$work/base.tar" "$BASE_IMAGE" >/dev/null
  rm -f "$work/base.tar"
}
[[ -n $(docker images -q "$BASE_IMAGE") ]] || timed base_image base_image

# ---- (c, first half) PostgreSQL and Redis from Debian's packages on that base, for
# postgres:16 and redis:7, which no registry here serves.
services_image() {
  mkdir -p "$work/services"
  # What the official postgres image does with POSTGRES_USER, POSTGRES_PASSWORD and
  # POSTGRES_DB on an empty data volume, then the server in the foreground as postgres
  # (setpriv execs: the server is PID 1 and gets docker's SIGTERM itself). PGPORT, from
  # the environment, is the port for both the server and pg_isready. UTF8 as in the
  # official image: without a locale initdb picks SQL_ASCII, whose text psycopg returns
  # as bytes.
  cat > "$work/services/postgres-entrypoint" <<'EOF'
#!/bin/sh
set -eu
bin=/usr/lib/postgresql/15/bin
data=/var/lib/postgresql/data
as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }
mkdir -p "$data" && chown postgres:postgres "$data" && chmod 700 "$data"
if [ ! -s "$data/PG_VERSION" ]; then
  pwfile=$(mktemp) && chown postgres "$pwfile"
  printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
  as_postgres "$bin/initdb" --pgdata="$data" --username="$POSTGRES_USER" \
    --pwfile="$pwfile" --auth=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  rm -f "$pwfile"
  echo "CREATE DATABASE \"$POSTGRES_DB\" OWNER \"$POSTGRES_USER\"" \
    | as_postgres "$bin/postgres" --single -D "$data" -j postgres >/dev/null
fi
exec setpriv --reuid=postgres --regid=postgres --init-groups \
  "$bin/postgres" -D "$data" -c listen_addresses=127.0.0.1 -c unix_socket_directories=/tmp
EOF
  chmod +x "$work/services/postgres-entrypoint"
  # No service starts at install (policy-rc.d), and no default cluster is made: the
  # entrypoint makes its own on the volume.
  cat > "$work/services/Dockerfile" <<EOF
FROM $BASE_IMAGE
RUN printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d \
    && mkdir -p /etc/postgresql-common/createcluster.d \
    && echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.d/image.conf \
    && apt-get update && apt-get install -y --no-install-recommends postgresql redis-server \
    && rm -rf /var/lib/apt/lists/*
COPY postgres-entrypoint /usr/local/bin/
EOF
  "${BUILD[@]}" --quiet --network host -t "$SERVICES_IMAGE" "$work/services" >/dev/null
}
[[ -n $(docker images -q "$SERVICES_IMAGE") ]] || timed services_image services_image

# ---- (b) the hpo image, FROM the offline base
secret=()
[[ -f $CA ]] && secret=(--secret "id=pip_cert,src=$CA")
hpo_image() {
  "${BUILD[@]}" --network host --progress plain --build-arg "BASE_IMAGE=$BASE_IMAGE" \
    "${secret[@]}" -t "$HPO_IMAGE" . > "$work/build.log" 2>&1 \
    || { tail -40 "$work/build.log" >&2; fail "the image did not build"; }
}
timed image_build hpo_image

# ---- (c) the stack: PostgreSQL, Redis, two agents and the ui, until all are healthy
cat > "$work/env" <<EOF
HPO_IMAGE=$HPO_IMAGE
TEST_SERVICES_IMAGE=$SERVICES_IMAGE
POSTGRES_PASSWORD=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
HPO_UI_TOKEN=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
POSTGRES_HOST=127.0.0.1
POSTGRES_PORT=$PG_PORT
HPO_BROKER_URL=redis://127.0.0.1:$REDIS_PORT/0
TEST_REDIS_PORT=$REDIS_PORT
TEST_UI_PORT=$UI_PORT
EOF
stack_up() {
  compose up -d --no-build --scale "agent=$AGENTS" postgres redis agent >/dev/null
  # The ui by `run`, which publishes no port: Docker refuses a published port on the
  # host's network, and compose v1 cannot drop the one docker-compose.yml publishes.
  compose run -d --no-deps ui >/dev/null
  local deadline=$((SECONDS + 300)) states
  while :; do
    states=$(containers | xargs docker inspect \
      --format '{{.Name}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}')
    if ! grep -qv ' healthy$' <<<"$states"; then
      break
    fi
    (( SECONDS < deadline )) || fail "not healthy after 300 s: $(tr '\n' ' ' <<<"$states")"
    sleep 2
  done
  say "healthy: $(awk '{print $1}' <<<"$states" | tr -d / | tr '\n' ' ')"
}
timed stack_up stack_up

# ---- (d) the digits example through the containerised agents
digits() {
  compose run --rm -T controller > "$work/controller.log" 2>&1 \
    || { tail -40 "$work/controller.log" >&2; fail "hpo-controller start failed"; }
}
timed digits_run digits
tail -5 "$work/controller.log" >&2

# The result, from the store: every job completed, each on one of the stack's agents.
# Asked inside a running agent's container: a new one costs a copy of the image (vfs).
compose exec -T agent hpo-controller status --all --json > "$work/status.json" \
  || fail "hpo-controller status failed"
compose exec -T agent hpo workers --json > "$work/workers.json" || fail "hpo workers failed"
python3 - "$work/status.json" "$work/workers.json" "$JOBS" "$AGENTS" <<'EOF' || exit 1
import json
import sys

status, workers = (json.load(open(path)) for path in sys.argv[1:3])
jobs, agents = int(sys.argv[3]), int(sys.argv[4])
ran_on = {job["worker"] for job in status["jobs"]}
names = {worker["name"] for worker in workers}
problems = []
if status["status"] != "completed":
    problems.append(f"the optimization is {status['status']}, not completed")
if {k: n for k, n in status["counts"].items() if n} != {"completed": jobs}:
    problems.append(f"jobs by status {status['counts']}, not {jobs} completed")
if len(names) != agents:
    problems.append(f"{len(names)} agents in the store, not {agents}")
if not ran_on <= names:
    problems.append(f"jobs ran on {sorted(ran_on - names)}, not the stack's agents")
print(f"image-test: {status['counts'].get('completed', 0)}/{jobs} jobs completed on "
      f"{len(ran_on)} agent(s), best {status['best_value']}", file=sys.stderr)
for problem in problems:
    print(f"image-test: FAILED: {problem}", file=sys.stderr)
sys.exit(1 if problems else 0)
EOF

# The ui shows the optimization to a client with the token, and asks others to log in.
python3 - "$UI_PORT" "$(grep ^HPO_UI_TOKEN= "$work/env" | cut -d= -f2)" "$work/status.json" \
  <<'EOF' || fail "the ui on 127.0.0.1:$UI_PORT does not show the optimization"
import json
import sys
import urllib.request

port, token, status = sys.argv[1], sys.argv[2], json.load(open(sys.argv[3]))
url = f"http://127.0.0.1:{port}/"
page = urllib.request.urlopen(urllib.request.Request(
    url, headers={"Authorization": f"Bearer {token}"}), timeout=10).read().decode()
assert status["id"] in page, "the optimization is not on the front page"
anonymous = urllib.request.urlopen(url, timeout=10)  # redirected to the login form
assert "/login" in anonymous.url, anonymous.url
EOF

if [[ -n ${HPO_TEST_RESULT:-} ]]; then
  {
    printf '{"jobs": %s, "agents": %s' "$JOBS" "$AGENTS"
    for name in "${!millis[@]}"; do printf ', "%s_s": %.1f' "$name" "${millis[$name]}e-3"; done
    printf '}\n'
  } > "$HPO_TEST_RESULT"
fi
say "passed"
