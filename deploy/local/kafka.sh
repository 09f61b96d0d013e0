# shellcheck shell=bash
# Local single-node KRaft Kafka broker. Sourced by stack.sh after env.sh and lib.sh.

KAFKA_CONFIG_DIR="$SIYU_KAFKA_HOME/config"
KAFKA_CONFIG="$KAFKA_CONFIG_DIR/server.properties"
KAFKA_LOG4J="$KAFKA_CONFIG_DIR/log4j.properties"
KAFKA_DATA_DIR="$SIYU_KAFKA_HOME/data"
KAFKA_LOG_DIR="$SIYU_KAFKA_HOME/logs"
KAFKA_RUN_DIR="$SIYU_KAFKA_HOME/run"
KAFKA_PIDFILE="$KAFKA_RUN_DIR/kafka.pid"
KAFKA_SERVER_LOG="$KAFKA_LOG_DIR/server.log"
KAFKA_STDOUT_LOG="$KAFKA_LOG_DIR/kafka.out"
KAFKA_STAMP="$SIYU_KAFKA_LIBS/.siyu-complete"
# Identifies our broker in /proc/PID/cmdline (guards against pid reuse).
KAFKA_MARKER="kafka.Kafka $KAFKA_CONFIG"

kafka_install() {
    local pom="$SIYU_REPO_ROOT/deploy/kafka/pom.xml" tmp mvn_log
    if [[ -f $KAFKA_STAMP ]]; then
        info "kafka $SIYU_KAFKA_VERSION: cached ($SIYU_KAFKA_LIBS)"
        return 0
    fi
    local -a missing=()
    have java || missing+=(default-jre-headless)
    have mvn || missing+=(maven)
    if ((${#missing[@]})); then apt_install "${missing[@]}"; fi

    mkdir -p "$SIYU_KAFKA_HOME/$SIYU_KAFKA_VERSION" "$KAFKA_LOG_DIR"
    tmp="$SIYU_KAFKA_LIBS.tmp"
    mvn_log="$KAFKA_LOG_DIR/install-$SIYU_KAFKA_VERSION.log"
    rm -rf "$tmp"
    # Maven's repository stays at its default (~/.m2), so jars are cached there too.
    if ! mvn -B -q -Dstyle.color=never -f "$pom" \
        -Dkafka.version="$SIYU_KAFKA_VERSION" -Dkafka.libs.dir="$tmp" \
        dependency:copy-dependencies >"$mvn_log" 2>&1; then
        rm -rf "$tmp"
        fail_start "kafka $SIYU_KAFKA_VERSION" "$mvn_log" "" "resolving the broker jars with Maven failed"
    fi
    [[ -f $tmp/kafka_2.13-$SIYU_KAFKA_VERSION.jar ]] ||
        die "Maven finished but $tmp/kafka_2.13-$SIYU_KAFKA_VERSION.jar is missing"
    rm -rf "$SIYU_KAFKA_LIBS"
    mv "$tmp" "$SIYU_KAFKA_LIBS"
    printf '%s\n' "$SIYU_KAFKA_VERSION" >"$KAFKA_STAMP"
    info "kafka $SIYU_KAFKA_VERSION: downloaded ($SIYU_KAFKA_LIBS)"
}

kafka_answers() {
    "$SIYU_PYTHON" "$SIYU_REPO_ROOT/deploy/local/kafka_probe.py" 127.0.0.1 "$SIYU_KAFKA_PORT" 3
}

# Version of a running broker, from the libs directory on its command line.
kafka_running_version() {
    local pid=$1
    tr '\0' '\n' <"/proc/$pid/cmdline" | sed -n 's|.*/kafka/\([^/]*\)/libs/\*$|\1|p' | head -1
}

KAFKA_JVM_OPTS=(
    -Xmx"$SIYU_KAFKA_HEAP" -Xms128m -XX:+UseG1GC -Djava.awt.headless=true
    -Dlog4j.configuration="file:$KAFKA_LOG4J" -Dkafka.logs.dir="$KAFKA_LOG_DIR"
    -cp "$SIYU_KAFKA_LIBS/*"
)

kafka_java() {
    java "${KAFKA_JVM_OPTS[@]}" "$@"
}

kafka_configure() {
    mkdir -p "$KAFKA_CONFIG_DIR" "$KAFKA_DATA_DIR" "$KAFKA_LOG_DIR" "$KAFKA_RUN_DIR"
    render "$SIYU_REPO_ROOT/deploy/kafka/server.properties.in" "$KAFKA_CONFIG" \
        SIYU_KAFKA_PORT SIYU_KAFKA_CONTROLLER_PORT KAFKA_DATA_DIR
    cp -f "$SIYU_REPO_ROOT/deploy/kafka/log4j.properties" "$KAFKA_LOG4J"

    # Format the storage once, with a cluster id generated the first time.
    if [[ ! -f $KAFKA_DATA_DIR/meta.properties ]]; then
        local cluster_id
        cluster_id=$(kafka_java kafka.tools.StorageTool random-uuid 2>>"$KAFKA_STDOUT_LOG" | tail -1)
        [[ -n $cluster_id ]] || fail_start kafka "$KAFKA_STDOUT_LOG" "" "could not generate a cluster id"
        kafka_java kafka.tools.StorageTool format -t "$cluster_id" -c "$KAFKA_CONFIG" \
            --ignore-formatted >>"$KAFKA_STDOUT_LOG" 2>&1 ||
            fail_start kafka "$KAFKA_STDOUT_LOG" "" "formatting the storage in $KAFKA_DATA_DIR failed"
        info "kafka: formatted $KAFKA_DATA_DIR (cluster id $cluster_id)"
    fi
}

kafka_up() {
    local pid port started=$SECONDS
    kafka_install
    if pid=$(live_pid "$KAFKA_PIDFILE" "$KAFKA_MARKER"); then
        if ! kafka_answers 2>/dev/null; then
            info "kafka: pid $pid is starting; waiting for it to answer"
            wait_ready kafka "$KAFKA_PIDFILE" "$KAFKA_MARKER" "$KAFKA_SERVER_LOG" "$KAFKA_STDOUT_LOG" kafka_answers
        fi
        info "kafka: already running (pid $pid, 127.0.0.1:$SIYU_KAFKA_PORT)"
        return 0
    fi
    rm -f "$KAFKA_PIDFILE"
    for port in "$SIYU_KAFKA_PORT" "$SIYU_KAFKA_CONTROLLER_PORT"; do
        if port_open "$port"; then
            die "kafka: port 127.0.0.1:$port is already used by another process (not ours: no live $KAFKA_PIDFILE); stop it or set SIYU_KAFKA_PORT / SIYU_KAFKA_CONTROLLER_PORT"
        fi
    done
    kafka_configure
    # setsid: own session, so the broker outlives the caller and its terminal.
    setsid java "${KAFKA_JVM_OPTS[@]}" kafka.Kafka "$KAFKA_CONFIG" \
        </dev/null >>"$KAFKA_STDOUT_LOG" 2>&1 9>&- &
    pid=$!
    printf '%s\n' "$pid" >"$KAFKA_PIDFILE"
    wait_ready kafka "$KAFKA_PIDFILE" "$KAFKA_MARKER" "$KAFKA_SERVER_LOG" "$KAFKA_STDOUT_LOG" kafka_answers
    info "kafka $SIYU_KAFKA_VERSION: started (pid $pid, 127.0.0.1:$SIYU_KAFKA_PORT) in $((SECONDS - started))s; logs in $KAFKA_LOG_DIR"
}

kafka_down() {
    stop_service kafka "$KAFKA_PIDFILE" "$KAFKA_MARKER"
}

# Prints one line; returns 0 only when running and answering.
kafka_status() {
    local pid version
    if pid=$(live_pid "$KAFKA_PIDFILE" "$KAFKA_MARKER"); then
        version=$(kafka_running_version "$pid")
        if kafka_answers 2>/dev/null; then
            info "kafka: running (pid $pid, port 127.0.0.1:$SIYU_KAFKA_PORT, version ${version:-?})"
            return 0
        fi
        info "kafka: not answering (pid $pid, port 127.0.0.1:$SIYU_KAFKA_PORT, version ${version:-?}); see $KAFKA_SERVER_LOG"
        return 1
    fi
    info "kafka: stopped"
    return 1
}

kafka_reset_data() {
    rm -rf "$KAFKA_DATA_DIR"
    info "kafka: deleted $KAFKA_DATA_DIR"
}
