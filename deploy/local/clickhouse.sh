# shellcheck shell=bash
# Local ClickHouse server with its own config and data under $SIYU_CLICKHOUSE_HOME.
# The Debian package's service (/etc/clickhouse-server, /var/lib/clickhouse) is
# never used. Sourced by stack.sh after env.sh and lib.sh.

CH_CONFIG_DIR="$SIYU_CLICKHOUSE_HOME/config"
CH_CONFIG="$CH_CONFIG_DIR/config.xml"
CH_USERS="$CH_CONFIG_DIR/users.xml"
CH_DATA_DIR="$SIYU_CLICKHOUSE_HOME/data"
CH_LOG_DIR="$SIYU_CLICKHOUSE_HOME/logs"
CH_RUN_DIR="$SIYU_CLICKHOUSE_HOME/run"
CH_PIDFILE="$CH_RUN_DIR/clickhouse.pid"
CH_SERVER_LOG="$CH_LOG_DIR/clickhouse-server.log"
CH_STDOUT_LOG="$CH_LOG_DIR/stdout.log"
# Identifies our server in /proc/PID/cmdline (guards against pid reuse).
CH_MARKER="--config-file=$CH_CONFIG"
# Placeholder for templates (read by render through ${!var}).
# shellcheck disable=SC2034
CH_HOME="$SIYU_CLICKHOUSE_HOME"

# The server binary: Debian's clickhouse-server (in /usr/sbin, often not on a
# non-root PATH), or the single `clickhouse` binary of upstream packages.
clickhouse_server_cmd() {
    if have clickhouse-server; then
        command -v clickhouse-server
    elif [[ -x /usr/sbin/clickhouse-server ]]; then
        printf '%s\n' /usr/sbin/clickhouse-server
    elif have clickhouse; then
        printf '%s server\n' "$(command -v clickhouse)"
    else
        return 1
    fi
}

clickhouse_install() {
    local -a missing=()
    local state=present
    clickhouse_server_cmd >/dev/null || missing+=(clickhouse-server)
    have clickhouse-client || missing+=(clickhouse-client)
    if ((${#missing[@]})); then
        apt_install "${missing[@]}"
        state=installed
        clickhouse_server_cmd >/dev/null || die "clickhouse-server still missing after apt-get install"
    fi
    info "clickhouse $(clickhouse_client_version): $state"
}

clickhouse_client_version() {
    local v
    v=$(clickhouse-client --version 2>/dev/null | grep -oE '[0-9]+(\.[0-9]+)+' | head -1) || true
    printf '%s\n' "${v:-?}"
}

clickhouse_query() {
    clickhouse-client --host 127.0.0.1 --port "$SIYU_CLICKHOUSE_PORT" -q "$1"
}

clickhouse_answers() {
    [[ $(clickhouse_query 'SELECT 1' 2>/dev/null) == 1 ]]
}

clickhouse_configure() {
    mkdir -p "$CH_CONFIG_DIR" "$CH_DATA_DIR" "$CH_LOG_DIR" "$CH_RUN_DIR" \
        "$SIYU_CLICKHOUSE_HOME/tmp" "$SIYU_CLICKHOUSE_HOME/user_files" \
        "$SIYU_CLICKHOUSE_HOME/format_schemas"
    render "$SIYU_REPO_ROOT/deploy/clickhouse/config.xml.in" "$CH_CONFIG" \
        CH_HOME SIYU_CLICKHOUSE_PORT SIYU_CLICKHOUSE_HTTP_PORT
    render "$SIYU_REPO_ROOT/deploy/clickhouse/users.xml.in" "$CH_USERS"
}

clickhouse_up() {
    local pid port started=$SECONDS server
    clickhouse_install
    if pid=$(live_pid "$CH_PIDFILE" "$CH_MARKER"); then
        if ! clickhouse_answers; then
            info "clickhouse: pid $pid is starting; waiting for it to answer"
            wait_ready clickhouse "$CH_PIDFILE" "$CH_MARKER" "$CH_SERVER_LOG" "$CH_STDOUT_LOG" clickhouse_answers
        fi
        info "clickhouse: already running (pid $pid, 127.0.0.1:$SIYU_CLICKHOUSE_PORT)"
        return 0
    fi
    rm -f "$CH_PIDFILE"
    for port in "$SIYU_CLICKHOUSE_PORT" "$SIYU_CLICKHOUSE_HTTP_PORT"; do
        if port_open "$port"; then
            die "clickhouse: port 127.0.0.1:$port is already used by another process (not ours: no live $CH_PIDFILE); stop it or set SIYU_CLICKHOUSE_PORT / SIYU_CLICKHOUSE_HTTP_PORT"
        fi
    done
    clickhouse_configure
    server=$(clickhouse_server_cmd) || die "clickhouse-server not found; run: stack.sh install"
    # Foreground server in its own session (setsid), so $! is the server's pid
    # and it outlives the caller. $server may be "clickhouse server": split it.
    # shellcheck disable=SC2086
    (cd "$SIYU_CLICKHOUSE_HOME" && exec setsid $server "$CH_MARKER" \
        </dev/null >>"$CH_STDOUT_LOG" 2>&1 9>&-) &
    pid=$!
    printf '%s\n' "$pid" >"$CH_PIDFILE"
    wait_ready clickhouse "$CH_PIDFILE" "$CH_MARKER" "$CH_SERVER_LOG" "$CH_STDOUT_LOG" clickhouse_answers
    info "clickhouse $(clickhouse_query 'SELECT version()'): started (pid $pid, 127.0.0.1:$SIYU_CLICKHOUSE_PORT, http $SIYU_CLICKHOUSE_HTTP_PORT) in $((SECONDS - started))s; logs in $CH_LOG_DIR"
}

clickhouse_down() {
    stop_service clickhouse "$CH_PIDFILE" "$CH_MARKER"
}

clickhouse_status() {
    local pid version
    if pid=$(live_pid "$CH_PIDFILE" "$CH_MARKER"); then
        if version=$(clickhouse_query 'SELECT version()' 2>/dev/null); then
            info "clickhouse: running (pid $pid, port 127.0.0.1:$SIYU_CLICKHOUSE_PORT, http $SIYU_CLICKHOUSE_HTTP_PORT, version $version)"
            return 0
        fi
        info "clickhouse: not answering (pid $pid, port 127.0.0.1:$SIYU_CLICKHOUSE_PORT); see $CH_SERVER_LOG"
        return 1
    fi
    info "clickhouse: stopped"
    return 1
}

clickhouse_reset_data() {
    rm -rf "$CH_DATA_DIR" "$SIYU_CLICKHOUSE_HOME/tmp"
    info "clickhouse: deleted $CH_DATA_DIR"
}
