#!/usr/bin/env bash
# A local multi-node cluster for the cluster tests and for trying siyu's cluster modes on one
# machine: a standalone ZooKeeper, two ClickHouse servers (one shard, two replicas) and a
# three-broker KRaft Kafka. Daemons of the current user, config/data/logs/pids under
# $SIYU_CLUSTER_HOME (default <repo>/.local/cluster), everything on 127.0.0.1, ports apart
# from the single-node dev stack (stack.sh), which this script never touches.
# Settings and defaults: cluster_env.sh.
#
# usage: cluster.sh install
#        cluster.sh up     [SERVICE...]   (default all)
#        cluster.sh down   [SERVICE...]
#        cluster.sh status [SERVICE...]   (exit 0 only if all are running)
#        cluster.sh reset                 (down, then delete the data)
# SERVICE: all | clickhouse (ZooKeeper and every replica) | kafka (every broker)
#          | zookeeper | clickhouseN | kafkaN   (N from 1)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=deploy/local/env.sh
source "$here/env.sh"
# shellcheck source=deploy/local/cluster_env.sh
source "$here/cluster_env.sh"
# shellcheck source=deploy/local/lib.sh
source "$here/lib.sh"
# kafka_install, kafka_probe; clickhouse_install, clickhouse_server_cmd.
# shellcheck source=deploy/local/kafka.sh
source "$here/kafka.sh"
# shellcheck source=deploy/local/clickhouse.sh
source "$here/clickhouse.sh"
# shellcheck source=deploy/local/zookeeper.sh
source "$here/zookeeper.sh"

usage() {
    sed -n 's/^# \{0,1\}\(usage:\|       \|SERVICE:\|         \)/\1/p' "${BASH_SOURCE[0]}" | head -8 >&2
    exit 2
}

# --- ClickHouse replicas ------------------------------------------------------------------

ch_home() { printf '%s\n' "$SIYU_CLUSTER_HOME/clickhouse$1"; }
ch_port() { printf '%s\n' $((SIYU_CLUSTER_CH_TCP_BASE + $1)); }
ch_marker() { printf -- '--config-file=%s\n' "$(ch_home "$1")/config/config.xml"; }

ch_node_query() {
    clickhouse-client --host 127.0.0.1 --port "$(ch_port "$1")" -q "$2"
}

ch_node_answers() {
    [[ $(ch_node_query "$1" 'SELECT 1' 2>/dev/null) == 1 ]]
}

# shellcheck disable=SC2034 # locals are read by render through ${!var}
ch_node_configure() {
    local i=$1 r
    # Read by render through ${!var}: this node's values shadow the dev stack's.
    local CH_HOME SIYU_CLICKHOUSE_PORT SIYU_CLICKHOUSE_HTTP_PORT CH_INTERSERVER_PORT CH_REPLICA
    local CH_REPLICAS_XML=""
    CH_HOME=$(ch_home "$i")
    SIYU_CLICKHOUSE_PORT=$(ch_port "$i")
    SIYU_CLICKHOUSE_HTTP_PORT=$((SIYU_CLUSTER_CH_HTTP_BASE + i))
    CH_INTERSERVER_PORT=$((SIYU_CLUSTER_CH_INTERSERVER_BASE + i))
    CH_REPLICA="r$i"
    for ((r = 1; r <= SIYU_CLUSTER_CH_REPLICAS; r++)); do
        CH_REPLICAS_XML+="                <replica><host>127.0.0.1</host><port>$(ch_port "$r")</port></replica>"
        ((r == SIYU_CLUSTER_CH_REPLICAS)) || CH_REPLICAS_XML+=$'\n'
    done
    mkdir -p "$CH_HOME/config/config.d" "$CH_HOME/data" "$CH_HOME/logs" "$CH_HOME/run" \
        "$CH_HOME/tmp" "$CH_HOME/user_files" "$CH_HOME/format_schemas"
    render "$SIYU_REPO_ROOT/deploy/clickhouse/config.xml.in" "$CH_HOME/config/config.xml" \
        CH_HOME SIYU_CLICKHOUSE_PORT SIYU_CLICKHOUSE_HTTP_PORT
    render "$SIYU_REPO_ROOT/deploy/clickhouse/users.xml.in" "$CH_HOME/config/users.xml"
    render "$SIYU_REPO_ROOT/deploy/clickhouse/cluster.xml.in" "$CH_HOME/config/config.d/cluster.xml" \
        CH_INTERSERVER_PORT SIYU_CLUSTER_ZK_PORT SIYU_CLUSTER_NAME SIYU_CLUSTER_CH_REPLICAS \
        CH_REPLICAS_XML CH_REPLICA
}

# ch_node_start I: launch replica I unless it runs; does not wait.
ch_node_start() {
    local i=$1 home pidfile marker port server pid
    home=$(ch_home "$i")
    pidfile="$home/run/clickhouse.pid"
    marker=$(ch_marker "$i")
    if pid=$(live_pid "$pidfile" "$marker"); then
        return 0
    fi
    rm -f "$pidfile"
    for port in "$(ch_port "$i")" $((SIYU_CLUSTER_CH_HTTP_BASE + i)) $((SIYU_CLUSTER_CH_INTERSERVER_BASE + i)); do
        port_open "$port" &&
            die "clickhouse$i: port 127.0.0.1:$port is used by another process; set SIYU_CLUSTER_CH_*_BASE"
    done
    ch_node_configure "$i"
    server=$(clickhouse_server_cmd) || die "clickhouse-server not found; run: cluster.sh install"
    # shellcheck disable=SC2086 # $server may be "clickhouse server"
    (cd "$home" && exec setsid $server "$marker" </dev/null >>"$home/logs/stdout.log" 2>&1 9>&-) &
    printf '%s\n' "$!" >"$pidfile"
    await_exec "$!" "$marker" || true
}

ch_node_wait() {
    local i=$1 home
    home=$(ch_home "$i")
    wait_ready "clickhouse$i" "$home/run/clickhouse.pid" "$(ch_marker "$i")" \
        "$home/logs/clickhouse-server.log" "$home/logs/stdout.log" ch_node_answers "$i"
    info "clickhouse$i: running (pid $(<"$home/run/clickhouse.pid"), 127.0.0.1:$(ch_port "$i"))"
}

ch_node_down() {
    local home
    home=$(ch_home "$1")
    stop_service "clickhouse$1" "$home/run/clickhouse.pid" "$(ch_marker "$1")"
}

ch_node_status() {
    local i=$1 home pid
    home=$(ch_home "$i")
    if pid=$(live_pid "$home/run/clickhouse.pid" "$(ch_marker "$i")"); then
        if ch_node_answers "$i"; then
            info "clickhouse$i: running (pid $pid, port 127.0.0.1:$(ch_port "$i"), replica r$i)"
            return 0
        fi
        info "clickhouse$i: not answering (pid $pid); see $home/logs/clickhouse-server.log"
        return 1
    fi
    info "clickhouse$i: stopped"
    return 1
}

# --- Kafka brokers --------------------------------------------------------------------------

kn_home() { printf '%s\n' "$SIYU_CLUSTER_HOME/kafka$1"; }
kn_port() { printf '%s\n' $((SIYU_CLUSTER_KAFKA_BASE + $1)); }
kn_marker() { printf 'kafka.Kafka %s\n' "$(kn_home "$1")/config/server.properties"; }

kn_answers() {
    "$SIYU_PYTHON" "$SIYU_REPO_ROOT/deploy/local/kafka_probe.py" 127.0.0.1 "$(kn_port "$1")" 3
}

# kn_jvm I: the JVM options of broker I, in the array KN_JVM.
KN_JVM=()
kn_jvm() {
    local home
    home=$(kn_home "$1")
    KN_JVM=(
        -Xmx"$SIYU_CLUSTER_KAFKA_HEAP" -Xms64m -XX:+UseG1GC -Djava.awt.headless=true
        -Dlog4j.configuration="file:$home/config/log4j.properties" -Dkafka.logs.dir="$home/logs"
        -cp "$SIYU_KAFKA_LIBS/*"
    )
}

# The cluster id all brokers are formatted with, generated once.
kn_cluster_id() {
    local file="$SIYU_CLUSTER_HOME/kafka-cluster-id" id
    if [[ ! -s $file ]]; then
        kn_jvm 1
        id=$(java "${KN_JVM[@]}" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1)
        [[ -n $id ]] || die "kafka: could not generate a cluster id"
        printf '%s\n' "$id" >"$file"
    fi
    cat "$file"
}

# shellcheck disable=SC2034 # locals are read by render through ${!var}
kn_configure() {
    local i=$1 home n voters=""
    # Read by render through ${!var}.
    local NODE_ID=$i VOTERS BROKER_PORT CONTROLLER_PORT DATA_DIR
    home=$(kn_home "$i")
    for ((n = 1; n <= SIYU_CLUSTER_KAFKA_BROKERS; n++)); do
        voters+="${voters:+,}$n@127.0.0.1:$((SIYU_CLUSTER_KAFKA_CONTROLLER_BASE + n))"
    done
    VOTERS=$voters
    BROKER_PORT=$(kn_port "$i")
    CONTROLLER_PORT=$((SIYU_CLUSTER_KAFKA_CONTROLLER_BASE + i))
    DATA_DIR="$home/data"
    mkdir -p "$home/config" "$home/data" "$home/logs" "$home/run"
    render "$SIYU_REPO_ROOT/deploy/kafka/cluster.properties.in" "$home/config/server.properties" \
        NODE_ID VOTERS BROKER_PORT CONTROLLER_PORT DATA_DIR
    cp -f "$SIYU_REPO_ROOT/deploy/kafka/log4j.properties" "$home/config/log4j.properties"
    if [[ ! -f $home/data/meta.properties ]]; then
        kn_jvm "$i"
        java "${KN_JVM[@]}" kafka.tools.StorageTool format -t "$(kn_cluster_id)" \
            -c "$home/config/server.properties" --ignore-formatted >>"$home/logs/kafka.out" 2>&1 ||
            fail_start "kafka$i" "$home/logs/kafka.out" "" "formatting $home/data failed"
    fi
}

# kn_start I: launch broker I unless it runs; does not wait (a broker answers only once a
# majority of the controllers runs, so all are launched before any is waited for).
kn_start() {
    local i=$1 home pidfile marker port
    home=$(kn_home "$i")
    pidfile="$home/run/kafka.pid"
    marker=$(kn_marker "$i")
    live_pid "$pidfile" "$marker" >/dev/null && return 0
    rm -f "$pidfile"
    for port in "$(kn_port "$i")" $((SIYU_CLUSTER_KAFKA_CONTROLLER_BASE + i)); do
        port_open "$port" &&
            die "kafka$i: port 127.0.0.1:$port is used by another process; set SIYU_CLUSTER_KAFKA_*BASE"
    done
    kn_configure "$i"
    kn_jvm "$i"
    setsid java "${KN_JVM[@]}" kafka.Kafka "$home/config/server.properties" \
        </dev/null >>"$home/logs/kafka.out" 2>&1 9>&- &
    printf '%s\n' "$!" >"$pidfile"
    await_exec "$!" "$marker" || true
}

kn_wait() {
    local i=$1 home
    home=$(kn_home "$i")
    wait_ready "kafka$i" "$home/run/kafka.pid" "$(kn_marker "$i")" "$home/logs/server.log" \
        "$home/logs/kafka.out" kn_answers "$i"
    info "kafka$i: running (pid $(<"$home/run/kafka.pid"), 127.0.0.1:$(kn_port "$i"))"
}

kn_down() {
    local home
    home=$(kn_home "$1")
    stop_service "kafka$1" "$home/run/kafka.pid" "$(kn_marker "$1")"
}

kn_status() {
    local i=$1 home pid
    home=$(kn_home "$i")
    if pid=$(live_pid "$home/run/kafka.pid" "$(kn_marker "$i")"); then
        if kn_answers "$i" 2>/dev/null; then
            info "kafka$i: running (pid $pid, port 127.0.0.1:$(kn_port "$i"))"
            return 0
        fi
        info "kafka$i: not answering (pid $pid); see $home/logs/server.log"
        return 1
    fi
    info "kafka$i: stopped"
    return 1
}

# --- Commands -------------------------------------------------------------------------------

# NODES: the nodes named by the arguments, in start order, each once.
NODES=()
select_nodes() {
    local arg n
    local -a picked=() all_ch=() all_kafka=()
    for ((n = 1; n <= SIYU_CLUSTER_CH_REPLICAS; n++)); do all_ch+=("clickhouse$n"); done
    for ((n = 1; n <= SIYU_CLUSTER_KAFKA_BROKERS; n++)); do all_kafka+=("kafka$n"); done
    (($#)) || set -- all
    for arg in "$@"; do
        case "$arg" in
        all) picked+=(zookeeper "${all_ch[@]}" "${all_kafka[@]}") ;;
        clickhouse) picked+=(zookeeper "${all_ch[@]}") ;;
        kafka) picked+=("${all_kafka[@]}") ;;
        zookeeper) picked+=(zookeeper) ;;
        clickhouse[1-9]*)
            [[ " ${all_ch[*]} " == *" $arg "* ]] ||
                die "no replica $arg (SIYU_CLUSTER_CH_REPLICAS=$SIYU_CLUSTER_CH_REPLICAS)"
            picked+=("$arg")
            ;;
        kafka[1-9]*)
            [[ " ${all_kafka[*]} " == *" $arg "* ]] ||
                die "no broker $arg (SIYU_CLUSTER_KAFKA_BROKERS=$SIYU_CLUSTER_KAFKA_BROKERS)"
            picked+=("$arg")
            ;;
        *) usage ;;
        esac
    done
    NODES=()
    for n in zookeeper "${all_ch[@]}" "${all_kafka[@]}"; do
        [[ " ${picked[*]} " == *" $n "* ]] && NODES+=("$n")
    done
    return 0
}

take_lock() {
    mkdir -p "$SIYU_CLUSTER_HOME"
    if have flock; then
        exec 9>"$SIYU_CLUSTER_HOME/.cluster.lock"
        flock 9
    fi
}

cmd_install() {
    take_lock
    zookeeper_install
    clickhouse_install
    kafka_install
}

cmd_up() {
    local node started=$SECONDS
    local -a ch=() kafka=()
    take_lock
    for node in "${NODES[@]}"; do
        case $node in
        zookeeper) zookeeper_up ;;
        clickhouse*) ch+=("${node#clickhouse}") ;;
        kafka*) kafka+=("${node#kafka}") ;;
        esac
    done
    if ((${#ch[@]})); then
        clickhouse_install
        for node in "${ch[@]}"; do ch_node_start "$node"; done
        for node in "${ch[@]}"; do ch_node_wait "$node"; done
    fi
    if ((${#kafka[@]})); then
        kafka_install
        for node in "${kafka[@]}"; do kn_start "$node"; done
        for node in "${kafka[@]}"; do kn_wait "$node"; done
    fi
    info "cluster: up in $((SECONDS - started))s"
}

cmd_down() {
    local i node pid
    take_lock
    # Brokers first, all at once: a broker's controlled shutdown needs a controller quorum,
    # which stopping them one by one takes away from the last (it would wait for SIGKILL).
    for node in "${NODES[@]}"; do
        if [[ $node == kafka* ]] && pid=$(live_pid "$(kn_home "${node#kafka}")/run/kafka.pid" "$(kn_marker "${node#kafka}")"); then
            kill -TERM "$pid" 2>/dev/null || true
        fi
    done
    for ((i = ${#NODES[@]} - 1; i >= 0; i--)); do
        case ${NODES[i]} in
        zookeeper) zookeeper_down ;;
        clickhouse*) ch_node_down "${NODES[i]#clickhouse}" ;;
        kafka*) kn_down "${NODES[i]#kafka}" ;;
        esac
    done
}

cmd_status() {
    local node rc=0
    for node in "${NODES[@]}"; do
        case $node in
        zookeeper) zookeeper_status || rc=3 ;;
        clickhouse*) ch_node_status "${node#clickhouse}" || rc=3 ;;
        kafka*) kn_status "${node#kafka}" || rc=3 ;;
        esac
    done
    return "$rc"
}

cmd_reset() {
    local n
    select_nodes all
    cmd_down
    zookeeper_reset_data
    for ((n = 1; n <= SIYU_CLUSTER_CH_REPLICAS; n++)); do rm -rf "$(ch_home "$n")/data" "$(ch_home "$n")/tmp"; done
    for ((n = 1; n <= SIYU_CLUSTER_KAFKA_BROKERS; n++)); do rm -rf "$(kn_home "$n")/data"; done
    rm -f "$SIYU_CLUSTER_HOME/kafka-cluster-id"
    info "cluster: data deleted"
}

check_settings() {
    local name seen=" " n port
    local -a ports=("$SIYU_CLUSTER_ZK_PORT")
    for name in SIYU_CLUSTER_CH_REPLICAS SIYU_CLUSTER_KAFKA_BROKERS SIYU_CLUSTER_CH_TCP_BASE \
        SIYU_CLUSTER_CH_HTTP_BASE SIYU_CLUSTER_CH_INTERSERVER_BASE SIYU_CLUSTER_KAFKA_BASE \
        SIYU_CLUSTER_KAFKA_CONTROLLER_BASE SIYU_CLUSTER_ZK_PORT; do
        [[ ${!name} =~ ^[0-9]+$ ]] || die "$name=${!name} is not a number"
    done
    [[ $SIYU_CLUSTER_NAME =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "SIYU_CLUSTER_NAME=$SIYU_CLUSTER_NAME is not an identifier"
    for ((n = 1; n <= SIYU_CLUSTER_CH_REPLICAS; n++)); do
        ports+=("$(ch_port "$n")" $((SIYU_CLUSTER_CH_HTTP_BASE + n)) $((SIYU_CLUSTER_CH_INTERSERVER_BASE + n)))
    done
    for ((n = 1; n <= SIYU_CLUSTER_KAFKA_BROKERS; n++)); do
        ports+=("$(kn_port "$n")" $((SIYU_CLUSTER_KAFKA_CONTROLLER_BASE + n)))
    done
    # Never the dev stack's ports, never one port twice (ClickHouse 18.16 wraps ports > 65535).
    seen+="$SIYU_KAFKA_PORT $SIYU_KAFKA_CONTROLLER_PORT $SIYU_CLICKHOUSE_PORT $SIYU_CLICKHOUSE_HTTP_PORT "
    for port in "${ports[@]}"; do
        ((port >= 1 && port <= 65535)) || die "cluster port $port is not a TCP port"
        [[ $seen != *" $port "* ]] || die "cluster port $port is used twice or by the dev stack"
        seen+="$port "
    done
}

main() {
    local cmd="${1:-}"
    (($# == 0)) || shift
    case "$cmd" in
    install | reset) (($# == 0)) || usage ;;
    up | down | status) select_nodes "$@" ;;
    *) usage ;;
    esac
    check_settings
    "cmd_$cmd"
}

main "$@"
