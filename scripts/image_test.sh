#!/usr/bin/env bash
# Build the container image with podman and prove it works: no registry needed for the base.
#
#   scripts/image_test.sh base    make the base image (debootstrap + podman import), once
#   scripts/image_test.sh build   base + `podman build` of the project image
#   scripts/image_test.sh test    build, then run it read-only and do one upload round trip
#   scripts/image_test.sh tools   only install podman, runc, debootstrap... if missing
#   scripts/image_test.sh distributed   build, then migrate + api + 2 workers against this
#                                 machine's PostgreSQL and RabbitMQ and a moto S3 server
#
# The containers get fresh API and metrics tokens (the image listens on 0.0.0.0) and every
# request sends them; requests without them must answer 401.
#
# Environment: IMAGE (default localhost/imageblur:dev), BASE_IMAGE (debian:bookworm-slim),
# IMAGE_TEST_PORT (default: a free one), IMAGE_TEST_PICTURES (../shared/example-pictures),
# IMAGE_TEST_PICTURE, IMAGE_TEST_OUTPUT (keep the result there), CONTAINERS_CONF (deploy/containers.conf),
# DEBIAN_MIRROR, CA_BUNDLE (host CA bundle handed to pip in the build). Needs root (apt-get, debootstrap, rootful podman).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

IMAGE=${IMAGE:-localhost/imageblur:dev}
BASE_IMAGE=${BASE_IMAGE:-debian:bookworm-slim}
PORT=${IMAGE_TEST_PORT:-}  # default: a free port, so that parallel runs do not collide
PICTURES=${IMAGE_TEST_PICTURES:-$ROOT/../shared/example-pictures}
PICTURE=${IMAGE_TEST_PICTURE:-$PICTURES/linus-trovalds.jpg}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
export CONTAINERS_CONF=${CONTAINERS_CONF:-$ROOT/deploy/containers.conf}
NAME=imageblur-image-test-$$
T0=$(date +%s)

log() { printf '[image-test %4ss] %s\n' "$(($(date +%s) - T0))" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

apt_updated=0
apt_get() {  # another clone's install may hold apt's lock: take turns, as the Makefile does
    flock /tmp/imageblur-apt.lock env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 "$@"
}
apt_install() {  # apt_install PACKAGE... (only the missing ones are passed in)
    [ "$(id -u)" -eq 0 ] || die "run as root to install: $*"
    if [ "$apt_updated" -eq 0 ]; then
        apt_get update -qq
        apt_updated=1
    fi
    apt_get install -y -qq --no-install-recommends "$@" >/dev/null
}

ensure_tools() {
    local missing=()
    command -v podman >/dev/null || missing+=(podman)
    command -v runc >/dev/null || missing+=(runc)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    command -v curl >/dev/null || missing+=(curl)
    command -v python3 >/dev/null || missing+=(python3)
    # podman's networking for published ports and its overlay storage helpers
    dpkg -s netavark >/dev/null 2>&1 || dpkg -s containernetworking-plugins >/dev/null 2>&1 \
        || missing+=(containernetworking-plugins)
    dpkg -s iptables >/dev/null 2>&1 || missing+=(iptables)
    dpkg -s ca-certificates >/dev/null 2>&1 || missing+=(ca-certificates)
    if [ "${#missing[@]}" -gt 0 ]; then
        log "installing ${missing[*]}"
        apt_install "${missing[@]}"
    fi
    [ "$(id -u)" -eq 0 ] || die "podman runs rootful here and debootstrap needs root: run as root"
}

# The base image, made from Debian's archive alone: the same bytes a registry's
# debian:bookworm-slim would give, minus docs. Cached: skipped when the image exists.
ensure_base() {
    if podman image exists "$BASE_IMAGE"; then
        log "base image $BASE_IMAGE present"
        return
    fi
    log "making base image $BASE_IMAGE with debootstrap (about a minute)"
    local dir
    dir=$(mktemp -d /var/tmp/imageblur-base.XXXXXX)
    # shellcheck disable=SC2064
    trap "rm -rf '$dir'" RETURN
    debootstrap --variant=minbase bookworm "$dir/rootfs" "$DEBIAN_MIRROR" >"$dir/debootstrap.log" 2>&1 \
        || { tail -20 "$dir/debootstrap.log" >&2; die "debootstrap failed"; }
    local rootfs=$dir/rootfs
    cat >"$rootfs/etc/apt/sources.list" <<EOF
deb $DEBIAN_MIRROR bookworm main
deb $DEBIAN_MIRROR bookworm-updates main
deb ${DEBIAN_MIRROR%/debian}/debian-security bookworm-security main
EOF
    # keep later apt-get installs slim, like the registry's -slim images
    cat >"$rootfs/etc/dpkg/dpkg.cfg.d/slim" <<'EOF'
path-exclude /usr/share/doc/*
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
        "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/var/log/*.log
    tar -C "$rootfs" --numeric-owner -c . \
        | podman import --quiet --change 'CMD ["bash"]' - "$BASE_IMAGE" >/dev/null
    log "base image $BASE_IMAGE imported"
}

build() {
    ensure_tools
    ensure_base
    log "building $IMAGE"
    # --format docker keeps HEALTHCHECK and SHELL (the OCI format drops them). The host's CA
    # bundle goes in as an optional build secret, for networks that intercept TLS.
    local secret=()
    [ -s "$CA_BUNDLE" ] && secret=(--secret "id=ca-certificates,src=$CA_BUNDLE")
    local build_log
    build_log=$(mktemp /tmp/imageblur-build.XXXXXX.log)
    podman build --format docker --network host --pull=never "${secret[@]}" \
        --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$IMAGE" -f Dockerfile . >"$build_log" 2>&1 \
        || { tail -40 "$build_log" >&2; die "podman build failed (full log: $build_log)"; }
    grep -E '^\[[0-9]/[0-9]\] STEP' "$build_log" | cut -c1-110 >&2 || true
    rm -f "$build_log"
    log "built $IMAGE ($(podman image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%d MB", $1/1e6}'))"
}

cleanup() {
    local rc=$?
    if podman container exists "$NAME" 2>/dev/null; then
        if [ "$rc" -ne 0 ]; then
            log "container logs:"
            podman logs --tail 60 "$NAME" >&2 || true
        fi
        podman rm -f -t 5 "$NAME" >/dev/null 2>&1 || true
    fi
    podman volume rm -f "$NAME" >/dev/null 2>&1 || true
    rm -rf "${WORK:-/nonexistent}"
    exit "$rc"
}

# A fresh token each run (the image listens on 0.0.0.0, so the application wants one),
# kept in files of mode 0600: never on a command line, never in the logs.
new_token() { head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

make_tokens() {  # make_tokens DIR: DIR/tokens.env for the container, DIR/*.header for curl
    local api metrics
    api=$(new_token)
    metrics=$(new_token)
    (
        umask 077
        printf 'IMAGEBLUR_API_TOKEN=%s\nIMAGEBLUR_METRICS_TOKEN=%s\n' "$api" "$metrics" >"$1/tokens.env"
        printf 'Authorization: Bearer %s\n' "$api" >"$1/api.header"
        printf 'Authorization: Bearer %s\n' "$metrics" >"$1/metrics.header"
    )
}

json_field() {  # json_field FILE KEY
    python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"
}

round_trip() {
    [ -f "$PICTURE" ] || die "example picture not found: $PICTURE"
    WORK=$(mktemp -d)
    trap cleanup EXIT

    log "static checks of the image"
    local uid
    uid=$(podman run --rm --no-healthcheck --entrypoint id "$IMAGE" -u)
    [ "$uid" != 0 ] || die "image runs as root"
    podman run --rm --no-healthcheck --entrypoint sh "$IMAGE" -c \
        'for c in gcc cc g++ c++ make; do if command -v $c; then exit 1; fi; done' \
        || die "a compiler is in the final image"
    podman run --rm --no-healthcheck --read-only --entrypoint imageblur "$IMAGE" --help >/dev/null \
        || die "imageblur --help fails"

    make_tokens "$WORK"
    if [ -z "$PORT" ]; then
        PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    fi
    # a fresh named volume for /data: podman copies the image's /data ownership into it
    podman volume create "$NAME" >/dev/null
    podman run --rm --no-healthcheck --read-only --cap-drop ALL -v "$NAME:/data" "$IMAGE" migrate \
        >/dev/null 2>&1 || die "the migrate role fails on the data volume"
    # Fail closed: the image listens on 0.0.0.0, so without a token `serve` must not start.
    local refusal
    if refusal=$(podman run --rm --no-healthcheck --read-only --cap-drop ALL -v "$NAME:/data" \
        "$IMAGE" serve 2>&1); then
        die "serve started on 0.0.0.0 without IMAGEBLUR_API_TOKEN"
    fi
    case "$refusal" in
        *IMAGEBLUR_API_TOKEN*IMAGEBLUR_ALLOW_ANONYMOUS*) ;;
        *) die "serve without a token did not name IMAGEBLUR_API_TOKEN and IMAGEBLUR_ALLOW_ANONYMOUS" ;;
    esac
    log "without a token, serve refuses to start and names both settings"
    log "running $IMAGE serve (read-only root, no capabilities) on 127.0.0.1:$PORT"
    # --health-interval disable: no systemd timer here; the check is run once by hand below
    podman run -d --name "$NAME" --health-interval disable \
        --read-only --tmpfs /tmp:rw,size=256m,mode=1777 \
        -v "$NAME:/data" --env-file "$WORK/tokens.env" \
        --cap-drop ALL --security-opt no-new-privileges \
        -p "127.0.0.1:$PORT:8080" "$IMAGE" serve \
        > /dev/null 2> >(grep -v 'systemd connection' >&2)
    local base="http://127.0.0.1:$PORT"

    local deadline=$(($(date +%s) + 120))
    until curl -fsS -o /dev/null "$base/healthz" 2>/dev/null; do
        [ "$(podman inspect -f '{{.State.Running}}' "$NAME")" = true ] || die "container exited"
        [ "$(date +%s)" -lt "$deadline" ] || die "/healthz not up after 120 s"
        sleep 1
    done
    log "/healthz answers"
    podman healthcheck run "$NAME" >/dev/null || die "the image's HEALTHCHECK fails"
    # The web page travels in the package: the page and one of its modules are served.
    curl -fsS -o /dev/null "$base/" || die "GET / (the web page) failed"
    curl -fsS -o /dev/null "$base/web/js/main.js" || die "the web page's script is not in the image"
    log "the web page is served"
    check_tokens "$base"

    log "uploading $(basename "$PICTURE")"
    local code
    code=$(curl -sS -o "$WORK/created.json" -w '%{http_code}' -H "@$WORK/api.header" \
        -F "image=@$PICTURE" "$base/picture")
    case "$code" in 200 | 201 | 202) ;; *) cat "$WORK/created.json" >&2; die "POST /picture: HTTP $code" ;; esac
    local id status
    id=$(json_field "$WORK/created.json" id)
    log "picture $id accepted (HTTP $code); waiting for the worker"

    deadline=$(($(date +%s) + 180))
    while :; do
        curl -fsS -o "$WORK/status.json" -H "@$WORK/api.header" "$base/picture/$id" \
            || die "GET /picture/$id failed"
        status=$(json_field "$WORK/status.json" status)
        case "$status" in
            done) break ;;
            failed | error | dead) cat "$WORK/status.json" >&2; die "job ended as $status" ;;
        esac
        [ "$(date +%s)" -lt "$deadline" ] || die "job still '$status' after 180 s"
        sleep 1
    done
    log "job done"

    curl -fsS -o "$WORK/result.jpg" -H "@$WORK/api.header" "$base/picture/$id/image" \
        || die "GET /picture/$id/image failed"
    local magic
    magic=$(head -c 3 "$WORK/result.jpg" | od -An -tx1 | tr -d ' \n')
    [ "$magic" = ffd8ff ] || die "result is not a JPEG (magic $magic)"
    cmp -s "$PICTURE" "$WORK/result.jpg" && die "result is byte-identical to the upload"
    [ -z "${IMAGE_TEST_OUTPUT:-}" ] || cp "$WORK/result.jpg" "$IMAGE_TEST_OUTPUT"
    log "result is a JPEG of $(wc -c <"$WORK/result.jpg") bytes, different from the upload"
    # SIGTERM reaches the app through tini and it stops cleanly, well within the grace time
    local t_stop
    t_stop=$(date +%s)
    podman stop -t 30 "$NAME" >/dev/null
    local exit_code
    exit_code=$(podman inspect -f '{{.State.ExitCode}}' "$NAME")
    # 0 after a graceful stop (143 would be death by the signal, 137 a kill)
    [ "$exit_code" = 0 ] || die "exit code $exit_code after SIGTERM"
    log "stopped cleanly on SIGTERM in $(($(date +%s) - t_stop)) s"
    log "PASS: image round trip in $(($(date +%s) - T0)) s"
}

http_code() {  # http_code URL [CURL ARG...]: the status of a GET, its body dropped
    local url=$1
    shift
    curl -sS -o /dev/null -w '%{http_code}' "$@" "$url" || true  # 000: no answer at all
}

check_tokens() {  # check_tokens BASE_URL: the API and /metrics answer only their own token
    local code
    code=$(http_code "$1/picture/0123456789abcdef0123456789abcdef")
    [ "$code" = 401 ] || die "GET /picture/... without the API token: HTTP $code, not 401"
    code=$(http_code "$1/metrics")
    [ "$code" = 401 ] || die "GET /metrics without the metrics token: HTTP $code, not 401"
    code=$(http_code "$1/metrics" -H "@$WORK/metrics.header")
    [ "$code" = 200 ] || die "GET /metrics with the metrics token: HTTP $code"
    log "without its token the API answers 401, /metrics too; with it, 200"
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_done() {  # wait_done BASE_URL ID: poll until `done`; fail on `failed` or after 180 s
    local deadline=$(($(date +%s) + 180)) status
    while :; do
        curl -fsS -o "$WORK/status.json" -H "@$WORK/api.header" "$1/picture/$2" \
            || die "GET /picture/$2 failed"
        status=$(json_field "$WORK/status.json" status)
        case "$status" in
            done) return 0 ;;
            failed) cat "$WORK/status.json" >&2; die "job $2 failed" ;;
        esac
        [ "$(date +%s)" -lt "$deadline" ] || die "job $2 still '$status' after 180 s"
        sleep 1
    done
}

# The distributed roles of the image (migrate, api, two workers; host network) against
# this machine's PostgreSQL and RabbitMQ (a private database and vhost, dropped after)
# and a moto S3 server from the project's .venv. Opt-in: make image-test-distributed.
DIST_DB="" DIST_VHOST="" DIST_MOTO_PID="" DIST_NAMES=()
dist_cleanup() {
    local rc=$? n
    for n in "${DIST_NAMES[@]}"; do
        if [ "$rc" -ne 0 ]; then
            log "logs of $n:"
            podman logs --tail 30 "$n" >&2 || true
        fi
        podman rm -f -t 5 "$n" >/dev/null 2>&1 || true
    done
    if [ -n "$DIST_DB" ]; then dropdb -h 127.0.0.1 -U postgres --if-exists "$DIST_DB" || true; fi
    if [ -n "$DIST_VHOST" ]; then rabbitmqctl -q delete_vhost "$DIST_VHOST" >/dev/null 2>&1 || true; fi
    if [ -n "$DIST_MOTO_PID" ]; then kill "$DIST_MOTO_PID" 2>/dev/null || true; fi
    rm -rf "${WORK:-/nonexistent}"
    exit "$rc"
}

distributed() {
    local py=${MOTO_PYTHON:-$ROOT/.venv/bin/python}
    [ -x "$py" ] || die "no $py: run make install first (moto S3 server)"
    command -v createdb >/dev/null && command -v rabbitmqctl >/dev/null \
        || die "needs PostgreSQL and RabbitMQ on this machine"
    (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null || die "PostgreSQL is not on 127.0.0.1:5432"
    (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null || die "RabbitMQ is not on 127.0.0.1:5672"
    WORK=$(mktemp -d)
    trap dist_cleanup EXIT
    DIST_DB=imageblur_image_test_$$
    DIST_VHOST=imageblur_image_test_$$
    createdb -h 127.0.0.1 -U postgres "$DIST_DB"
    rabbitmqctl -q add_vhost "$DIST_VHOST" >/dev/null
    rabbitmqctl -q set_permissions -p "$DIST_VHOST" guest '.*' '.*' '.*' >/dev/null
    local s3_port api_port
    s3_port=$(free_port)
    api_port=$(free_port)
    "$py" -m moto.server -H 127.0.0.1 -p "$s3_port" >/dev/null 2>&1 &
    DIST_MOTO_PID=$!
    make_tokens "$WORK"
    {
        cat "$WORK/tokens.env"
        echo "IMAGEBLUR_STORE=s3"
        echo "IMAGEBLUR_REPOSITORY=postgres"
        echo "IMAGEBLUR_QUEUE=rabbitmq"
        echo "IMAGEBLUR_POSTGRES_DSN=postgresql://postgres@127.0.0.1:5432/$DIST_DB"
        echo "IMAGEBLUR_RABBITMQ_URL=amqp://guest:guest@127.0.0.1:5672/$DIST_VHOST"
        echo "IMAGEBLUR_S3_ENDPOINT_URL=http://127.0.0.1:$s3_port"
        echo "IMAGEBLUR_S3_ACCESS_KEY_ID=testing"
        echo "IMAGEBLUR_S3_SECRET_ACCESS_KEY=testing"
        echo "IMAGEBLUR_S3_ADDRESSING_STYLE=path"
        echo "IMAGEBLUR_S3_CREATE_BUCKETS=true"
        echo "IMAGEBLUR_PORT=$api_port"
        echo "IMAGEBLUR_DETECTOR_THREADS=1"
    } >"$WORK/env"
    local run=(podman run --network host --read-only --cap-drop ALL
        --security-opt no-new-privileges --no-healthcheck --env-file "$WORK/env")
    local deadline=$(($(date +%s) + 30))
    until (exec 3<>"/dev/tcp/127.0.0.1/$s3_port") 2>/dev/null; do
        [ "$(date +%s)" -lt "$deadline" ] || die "moto S3 server not up"
        sleep 0.5
    done
    log "migrate, api and two workers as containers (host network, S3 on :$s3_port)"
    "${run[@]}" --rm "$IMAGE" migrate >/dev/null 2>&1 || die "migrate failed"
    # Each worker serves its metrics on a port of its own, on 0.0.0.0 (the image's
    # IMAGEBLUR_HOST), as in Kubernetes: answered only with the metrics token.
    local role n metrics_ports=() extra
    for role in api worker worker; do
        n=imageblur-image-test-$$-$role-${#DIST_NAMES[@]}
        DIST_NAMES+=("$n")
        extra=()
        if [ "$role" = worker ]; then
            metrics_ports+=("$(free_port)")
            extra=(-e "IMAGEBLUR_METRICS_PORT=${metrics_ports[-1]}")
        fi
        "${run[@]}" -d --name "$n" "${extra[@]}" "$IMAGE" "$role" >/dev/null
    done
    local base="http://127.0.0.1:$api_port"
    deadline=$(($(date +%s) + 120))
    until curl -fsS -o /dev/null "$base/readyz" 2>/dev/null; do
        [ "$(date +%s)" -lt "$deadline" ] || die "/readyz not ready after 120 s"
        sleep 1
    done
    log "/readyz: database, queue and both buckets reachable"
    check_tokens "$base"
    local port code
    for port in "${metrics_ports[@]}"; do
        deadline=$(($(date +%s) + 60))
        until [ "$(http_code "http://127.0.0.1:$port/metrics" -H "@$WORK/metrics.header" 2>/dev/null)" = 200 ]; do
            [ "$(date +%s)" -lt "$deadline" ] || die "a worker's /metrics on :$port not up after 60 s"
            sleep 1
        done
        code=$(http_code "http://127.0.0.1:$port/metrics")
        [ "$code" = 401 ] || die "a worker's /metrics without the token: HTTP $code, not 401"
    done
    log "the workers' metrics ports answer only the metrics token"
    local ids=() f
    for f in "$PICTURES"/*.jpg; do
        curl -fsS -o "$WORK/created.json" -H "@$WORK/api.header" -F "image=@$f" "$base/picture" \
            || die "upload of $f"
        ids+=("$(json_field "$WORK/created.json" id)")
    done
    [ "${#ids[@]}" -gt 0 ] || die "no example pictures"
    for f in "${ids[@]}"; do wait_done "$base" "$f"; done
    curl -fsS -o "$WORK/result" -H "@$WORK/api.header" "$base/picture/${ids[0]}/image" \
        || die "result download"
    log "${#ids[@]} pictures done: API -> RabbitMQ -> workers -> S3"
    for n in "${DIST_NAMES[@]}"; do
        podman stop -t 30 "$n" >/dev/null
        [ "$(podman inspect -f '{{.State.ExitCode}}' "$n")" = 0 ] || die "$n did not stop cleanly"
    done
    log "PASS: distributed roles in $(($(date +%s) - T0)) s"
}

case "${1:-test}" in
    tools) ensure_tools ;;
    base) ensure_tools && ensure_base ;;
    build) build ;;
    test) build && round_trip ;;
    distributed) build && distributed ;;
    *) echo "usage: $0 [tools|base|build|test|distributed]" >&2; exit 2 ;;
esac
