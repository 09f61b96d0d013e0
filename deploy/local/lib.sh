# shellcheck shell=bash
# Helpers shared by deploy/local/*.sh. Sourced after env.sh; defines functions only.

info() { printf '%s\n' "$*"; }
warn() { printf 'stack.sh: %s\n' "$*" >&2; }
die() {
    printf 'stack.sh: error: %s\n' "$*" >&2
    exit 1
}

have() { command -v "$1" >/dev/null 2>&1; }

# pid_matches PID MARKER: PID is a live (non-zombie) process whose command line
# contains MARKER. Guards against pid reuse: we only ever signal our own process.
pid_matches() {
    local pid=$1 marker=$2 cmdline
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ -r /proc/$pid/cmdline ]] || return 1
    cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    [[ -n $cmdline && $cmdline == *"$marker"* ]]
}

# live_pid PIDFILE MARKER: print the pid recorded in PIDFILE if it is our live process.
live_pid() {
    local pidfile=$1 marker=$2 pid
    [[ -s $pidfile ]] || return 1
    pid=$(<"$pidfile")
    pid_matches "$pid" "$marker" || return 1
    printf '%s\n' "$pid"
}

# await_exec PID MARKER: wait (up to 5 s) until PID, just forked by `cmd &`, has become the
# command whose line contains MARKER. Until then its command line is the forking shell's, and
# a readiness check that fails fast would take the process for one that exited.
await_exec() {
    local pid=$1 marker=$2 i
    for ((i = 0; i < 50; i++)); do
        pid_matches "$pid" "$marker" && return 0
        [[ -e /proc/$pid ]] || return 1
        sleep 0.1
    done
    return 1
}

# port_open PORT: something accepts TCP connections on 127.0.0.1:PORT.
port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# stop_pid NAME PID MARKER: SIGTERM, wait up to SIYU_STOP_TIMEOUT s, then SIGKILL.
stop_pid() {
    local name=$1 pid=$2 marker=$3 deadline
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + SIYU_STOP_TIMEOUT))
    while pid_matches "$pid" "$marker"; do
        if ((SECONDS >= deadline)); then
            warn "$name (pid $pid) still running ${SIYU_STOP_TIMEOUT}s after SIGTERM; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            deadline=$((SECONDS + 10))
            while pid_matches "$pid" "$marker" && ((SECONDS < deadline)); do sleep 0.2; done
            pid_matches "$pid" "$marker" && die "$name (pid $pid) survived SIGKILL"
            return 0
        fi
        sleep 0.2
    done
}

# render TEMPLATE OUTPUT VAR...: copy TEMPLATE to OUTPUT replacing @VAR@ by $VAR.
render() {
    local template=$1 output=$2 var value content
    shift 2
    content=$(<"$template")
    for var in "$@"; do
        value=${!var}
        content=${content//"@$var@"/"$value"}
    done
    if grep -qE '@[A-Z_]+@' <<<"$content"; then
        die "unrendered placeholder in $output: $(grep -oE '@[A-Z_]+@' <<<"$content" | head -1)"
    fi
    printf '%s\n' "$content" >"$output.tmp"
    mv -f "$output.tmp" "$output"
}

# fail_start NAME LOGFILE OUTFILE MESSAGE: one clear error naming the log file
# and showing its last lines (and those of OUTFILE, the process's captured
# stdout/stderr, when not empty); then exit 1.
fail_start() {
    local name=$1 logfile=$2 outfile=$3 message=$4
    {
        printf 'stack.sh: error: %s: %s\n' "$name" "$message"
        printf 'stack.sh: look at %s; its last lines:\n' "$logfile"
        if [[ -s $logfile ]]; then
            tail -n 25 "$logfile" | sed 's/^/    /'
        else
            printf '    (empty or missing)\n'
        fi
        if [[ -n $outfile && $outfile != "$logfile" && -s $outfile ]]; then
            printf 'stack.sh: and at %s:\n' "$outfile"
            tail -n 15 "$outfile" | sed 's/^/    /'
        fi
    } >&2
    exit 1
}

# wait_ready NAME PIDFILE MARKER LOGFILE OUTFILE CHECK...: poll CHECK (a
# command) until it succeeds. Fails fast if the process exits; after
# SIYU_STACK_TIMEOUT seconds stops the process and fails. On failure the pid
# file is removed.
wait_ready() {
    local name=$1 pidfile=$2 marker=$3 logfile=$4 outfile=$5 deadline pid
    shift 5
    pid=$(<"$pidfile")
    deadline=$((SECONDS + SIYU_STACK_TIMEOUT))
    until "$@" 2>/dev/null; do
        if ! pid_matches "$pid" "$marker"; then
            rm -f "$pidfile"
            fail_start "$name" "$logfile" "$outfile" "process $pid exited during startup"
        fi
        if ((SECONDS >= deadline)); then
            stop_pid "$name" "$pid" "$marker"
            rm -f "$pidfile"
            fail_start "$name" "$logfile" "$outfile" \
                "did not answer within ${SIYU_STACK_TIMEOUT}s (SIYU_STACK_TIMEOUT); stopped pid $pid"
        fi
        sleep 0.25
    done
}

# apt_install PKG...: install Debian packages non-interactively; runs
# `apt-get update` and retries once only when the first attempt fails (for
# example on a fresh machine without package lists).
apt_install() {
    local -a sudo=()
    if ((EUID != 0)); then
        have sudo || die "installing $* needs root (or sudo)"
        sudo=(sudo)
    fi
    have apt-get || die "cannot install $*: no apt-get; install them by hand"
    info "installing with apt-get: $*"
    if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@"; then
        info "apt-get install failed; running apt-get update and retrying"
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q ||
            die "apt-get update failed"
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" ||
            die "apt-get install $* failed"
    fi
}

# deb_version PKG: installed Debian package version, or empty.
deb_version() {
    have dpkg-query || return 0
    dpkg-query -W -f='${Version}' "$1" 2>/dev/null || true
}

# stop_service NAME PIDFILE MARKER: stop the daemon recorded in PIDFILE, if it is ours.
stop_service() {
    local name=$1 pidfile=$2 marker=$3 pid
    if pid=$(live_pid "$pidfile" "$marker"); then
        stop_pid "$name" "$pid" "$marker"
        rm -f "$pidfile"
        info "$name: stopped (pid $pid)"
    else
        rm -f "$pidfile"
        info "$name: not running"
    fi
}
