#!/usr/bin/env bash
# The project's local stack: a single-node KRaft Kafka broker and a ClickHouse
# server, run as background daemons by the current user, with their config,
# data, logs and pid files under $SIYU_LOCAL_DIR (default <repo>/.local).
# Everything listens on 127.0.0.1 only. Settings and defaults: env.sh.
#
# usage: stack.sh install
#        stack.sh up     [kafka|clickhouse|all]   (default all)
#        stack.sh down   [kafka|clickhouse|all]
#        stack.sh status [kafka|clickhouse|all]   (exit 0 only if all are running)
#        stack.sh reset                            (down, then delete the data)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=deploy/local/env.sh
source "$here/env.sh"
# shellcheck source=deploy/local/lib.sh
source "$here/lib.sh"
# shellcheck source=deploy/local/kafka.sh
source "$here/kafka.sh"
# shellcheck source=deploy/local/clickhouse.sh
source "$here/clickhouse.sh"
# zookeeper_install only: ZooKeeper runs in the multi-node cluster (cluster.sh), not here.
# shellcheck source=deploy/local/cluster_env.sh
source "$here/cluster_env.sh"
# shellcheck source=deploy/local/zookeeper.sh
source "$here/zookeeper.sh"

usage() {
    cat >&2 <<'USAGE'
usage: stack.sh install
       stack.sh up     [kafka|clickhouse|all]   (default all)
       stack.sh down   [kafka|clickhouse|all]
       stack.sh status [kafka|clickhouse|all]   (exit 0 only if all are running)
       stack.sh reset                            (down, then delete the data)
USAGE
    exit 2
}

# SERVICES: the services named by the command's argument, in start order.
SERVICES=()
select_services() {
    case "${1:-all}" in
    all) SERVICES=(kafka clickhouse) ;;
    kafka | clickhouse) SERVICES=("$1") ;;
    *) usage ;;
    esac
}

# One `up`/`down`/`reset`/`install` at a time (pytest workers, two terminals).
take_lock() {
    mkdir -p "$SIYU_LOCAL_DIR"
    if have flock; then
        exec 9>"$SIYU_LOCAL_DIR/.stack.lock"
        flock 9
        # Daemons started under the lock must not inherit fd 9 (they close it
        # with 9>&-), or the lock would stay held for as long as they run.
    fi
}

cmd_install() {
    take_lock
    kafka_install
    clickhouse_install
    zookeeper_install
    # promtool (the rule checks in the tests) comes with Debian's prometheus package.
    if have prometheus && have promtool; then
        info "prometheus: present"
    else
        apt_install prometheus
        info "prometheus: installed"
    fi
}

cmd_up() {
    local svc
    take_lock
    for svc in "${SERVICES[@]}"; do "${svc}_up"; done
}

cmd_down() {
    local i
    take_lock
    # Reverse start order.
    for ((i = ${#SERVICES[@]} - 1; i >= 0; i--)); do "${SERVICES[i]}_down"; done
}

cmd_status() {
    local svc rc=0
    for svc in "${SERVICES[@]}"; do "${svc}_status" || rc=3; done
    return "$rc"
}

cmd_reset() {
    select_services all
    cmd_down
    kafka_reset_data
    clickhouse_reset_data
}

# Catch bad settings early: ClickHouse 18.16 silently wraps ports > 65535.
check_settings() {
    local name seen=" "
    for name in SIYU_KAFKA_PORT SIYU_KAFKA_CONTROLLER_PORT SIYU_CLICKHOUSE_PORT SIYU_CLICKHOUSE_HTTP_PORT; do
        if ! [[ ${!name} =~ ^[0-9]+$ ]] || ((${!name} < 1 || ${!name} > 65535)); then
            die "$name=${!name} is not a TCP port"
        fi
        [[ $seen != *" ${!name} "* ]] || die "$name=${!name}: port used twice"
        seen+="${!name} "
    done
    for name in SIYU_STACK_TIMEOUT SIYU_STOP_TIMEOUT; do
        [[ ${!name} =~ ^[0-9]+$ ]] || die "$name=${!name} is not a number of seconds"
    done
}

main() {
    local cmd="${1:-}"
    (($# == 0)) || shift
    (($# <= 1)) || usage
    case "$cmd" in
    install | reset) (($# == 0)) || usage ;;
    up | down | status) select_services "$@" ;;
    *) usage ;;
    esac
    check_settings
    "cmd_$cmd"
}

main "$@"
