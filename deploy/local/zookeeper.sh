# shellcheck shell=bash
# Local standalone ZooKeeper (Debian's `zookeeper` package) for the ClickHouse cluster.
# Sourced after env.sh, cluster_env.sh and lib.sh. The package's own service and its
# /etc/zookeeper config are never used: config, data and logs live under $ZK_HOME.

ZK_HOME="$SIYU_CLUSTER_HOME/zookeeper"
ZK_CONF_DIR="$ZK_HOME/conf"
ZK_CFG="$ZK_CONF_DIR/zoo.cfg"
ZK_DATA_DIR="$ZK_HOME/data"
ZK_LOG_DIR="$ZK_HOME/logs"
ZK_PIDFILE="$ZK_HOME/run/zookeeper.pid"
ZK_OUT_LOG="$ZK_LOG_DIR/zookeeper.out"
ZK_JAR=/usr/share/java/zookeeper.jar
# Identifies our server in /proc/PID/cmdline (guards against pid reuse).
ZK_MARKER="QuorumPeerMain $ZK_CFG"

zookeeper_install() {
    if [[ -f $ZK_JAR ]]; then
        info "zookeeper $(deb_version zookeeper): present"
        return 0
    fi
    have java || apt_install default-jre-headless
    apt_install zookeeper
    [[ -f $ZK_JAR ]] || die "$ZK_JAR still missing after apt-get install zookeeper"
    info "zookeeper $(deb_version zookeeper): installed"
}

# zookeeper_answers: the server serves requests: `srvr` reports its mode. (`ruok` is not
# enough: it says `imok` while the database is still loading, and ClickHouse 18.16 crashes
# when its ZooKeeper handshake fails in that window.)
zookeeper_answers() {
    local reply=""
    exec 3<>"/dev/tcp/127.0.0.1/$SIYU_CLUSTER_ZK_PORT" || return 1
    printf 'srvr' >&3
    reply=$(timeout 3 cat <&3) || true
    exec 3>&- 3<&-
    [[ $reply == *"Mode: "* ]]
}

zookeeper_up() {
    local pid started=$SECONDS
    zookeeper_install
    if pid=$(live_pid "$ZK_PIDFILE" "$ZK_MARKER"); then
        wait_ready zookeeper "$ZK_PIDFILE" "$ZK_MARKER" "$ZK_OUT_LOG" "" zookeeper_answers
        info "zookeeper: already running (pid $pid, 127.0.0.1:$SIYU_CLUSTER_ZK_PORT)"
        return 0
    fi
    rm -f "$ZK_PIDFILE"
    port_open "$SIYU_CLUSTER_ZK_PORT" &&
        die "zookeeper: port 127.0.0.1:$SIYU_CLUSTER_ZK_PORT is used by another process; set SIYU_CLUSTER_ZK_PORT"
    mkdir -p "$ZK_CONF_DIR" "$ZK_DATA_DIR" "$ZK_LOG_DIR" "$ZK_HOME/run"
    render "$SIYU_REPO_ROOT/deploy/zookeeper/zoo.cfg.in" "$ZK_CFG" ZK_DATA_DIR SIYU_CLUSTER_ZK_PORT
    # slf4j-simple logs to stderr, which goes to $ZK_OUT_LOG. The jar's manifest lists the
    # rest of its class path (Debian's /usr/share/java jars).
    setsid java -Xmx"$SIYU_CLUSTER_ZK_HEAP" -Xms32m -XX:+UseSerialGC -Djava.awt.headless=true \
        -Dzookeeper.admin.enableServer=false -Dorg.slf4j.simpleLogger.defaultLogLevel=warn \
        -cp "$ZK_CONF_DIR:$ZK_JAR:/usr/share/java/slf4j-simple.jar" \
        org.apache.zookeeper.server.quorum.QuorumPeerMain "$ZK_CFG" \
        </dev/null >>"$ZK_OUT_LOG" 2>&1 9>&- &
    pid=$!
    printf '%s\n' "$pid" >"$ZK_PIDFILE"
    await_exec "$pid" "$ZK_MARKER" || true
    wait_ready zookeeper "$ZK_PIDFILE" "$ZK_MARKER" "$ZK_OUT_LOG" "" zookeeper_answers
    info "zookeeper: started (pid $pid, 127.0.0.1:$SIYU_CLUSTER_ZK_PORT) in $((SECONDS - started))s; log $ZK_OUT_LOG"
}

zookeeper_down() {
    stop_service zookeeper "$ZK_PIDFILE" "$ZK_MARKER"
}

zookeeper_status() {
    local pid
    if pid=$(live_pid "$ZK_PIDFILE" "$ZK_MARKER"); then
        if zookeeper_answers 2>/dev/null; then
            info "zookeeper: running (pid $pid, port 127.0.0.1:$SIYU_CLUSTER_ZK_PORT)"
            return 0
        fi
        info "zookeeper: not answering (pid $pid); see $ZK_OUT_LOG"
        return 1
    fi
    info "zookeeper: stopped"
    return 1
}

zookeeper_reset_data() {
    rm -rf "$ZK_DATA_DIR"
    info "zookeeper: deleted $ZK_DATA_DIR"
}
