#!/usr/bin/env bash
# A RabbitMQ cluster of N nodes on this machine, for high-availability tests and demos.
#
#   scripts/rabbitmq_cluster.sh start N     start nodes 0..N-1 and cluster them (~25 s for 3)
#   scripts/rabbitmq_cluster.sh kill I      kill -9 node I's Erlang VM (no clean shutdown)
#   scripts/rabbitmq_cluster.sh restart I   start node I again (rejoins with its data)
#   scripts/rabbitmq_cluster.sh stop N      kill every node and forget the data
#   scripts/rabbitmq_cluster.sh urls N      print the AMQP URLs, comma-separated
#
# Each node has its own name (NAME-I@localhost), AMQP port (BASE+I), distribution port
# (BASE+1000+I), data directory and config file, so the machine's own broker
# (rabbit@localhost on 5672, /etc/rabbitmq) is neither used nor disturbed.
#
# Environment: RMQ_NAME (default imageblur), RMQ_BASE_PORT (default 25672),
# RMQ_DIR (default /tmp/imageblur-rabbitmq-cluster).
set -euo pipefail

NAME=${RMQ_NAME:-imageblur}
BASE=${RMQ_BASE_PORT:-25672}
DIR=${RMQ_DIR:-/tmp/imageblur-rabbitmq-cluster}
mkdir -p "$DIR"

node() { echo "${NAME}-$1@localhost"; }
ctl() { local i=$1; shift; rabbitmqctl -q -n "$(node "$i")" "$@"; }

node_env() {
    local i=$1 d="$DIR/node$1"
    mkdir -p "$d/mnesia" "$d/log"
    # Our own config and env files: the machine's ones pin rabbit@localhost:5672.
    cat >"$d/rabbitmq.conf" <<EOF
listeners.tcp.default = 127.0.0.1:$((BASE + i))
loopback_users = none
cluster_partition_handling = pause_minority
EOF
    : >"$d/rabbitmq-env.conf"
    echo "[]." >"$d/enabled_plugins"
    export RABBITMQ_NODENAME; RABBITMQ_NODENAME=$(node "$i")
    export RABBITMQ_NODE_PORT=$((BASE + i))
    export RABBITMQ_DIST_PORT=$((BASE + 1000 + i))
    export RABBITMQ_CONFIG_FILE="$d/rabbitmq.conf"
    export RABBITMQ_CONF_ENV_FILE="$d/rabbitmq-env.conf"
    export RABBITMQ_ENABLED_PLUGINS_FILE="$d/enabled_plugins"
    export RABBITMQ_MNESIA_BASE="$d/mnesia"
    export RABBITMQ_LOG_BASE="$d/log"
    export RABBITMQ_PID_FILE="$d/pid"
    export ERL_EPMD_ADDRESS=127.0.0.1
    # Run as root, rabbitmq-server switches to the rabbitmq user (keeping this env).
    if id rabbitmq >/dev/null 2>&1 && [[ $(id -u) == 0 ]]; then
        chown -R rabbitmq: "$DIR"
    fi
}

start_node() {
    local i=$1
    ( node_env "$i"; rabbitmq-server -detached >/dev/null 2>&1 )
    # await_startup waits for the boot to finish (or fail) once the VM answers.
    for _ in $(seq 1 90); do
        if ctl "$i" await_startup --timeout 60 >/dev/null 2>&1; then return 0; fi
        sleep 0.5
    done
    echo "node $(node "$i") did not start; see $DIR/node$i/log" >&2
    return 1
}

kill_node() {
    local i=$1 pid
    pid=$(cat "$DIR/node$i/pid" 2>/dev/null || true)
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
        kill -9 "$pid"
        while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    fi
}

cmd=${1:-}; arg=${2:-}
case "$cmd" in
start)
    n=${arg:-3}
    for i in $(seq 0 $((n - 1))); do start_node "$i" & done
    wait
    for i in $(seq 1 $((n - 1))); do
        # Retried: right after boot a join can time out on a busy machine.
        for try in 1 2 3; do
            if ctl "$i" stop_app && ctl "$i" join_cluster "$(node 0)" && ctl "$i" start_app
            then break; fi
            [[ $try == 3 ]] && { echo "node $(node "$i") could not join" >&2; exit 1; }
            sleep 2
        done
    done
    ctl 0 await_startup
    ;;
kill) kill_node "$arg" ;;
restart) start_node "$arg" ;;
stop)
    n=${arg:-3}
    for i in $(seq 0 $((n - 1))); do kill_node "$i"; done
    rm -rf "$DIR"
    ;;
urls)
    n=${arg:-3}
    urls=()
    for i in $(seq 0 $((n - 1))); do urls+=("amqp://guest:guest@127.0.0.1:$((BASE + i))/%2F"); done
    (IFS=,; echo "${urls[*]}")
    ;;
*)
    sed -n '2,16p' "$0" >&2
    exit 2
    ;;
esac
