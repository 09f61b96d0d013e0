# shellcheck shell=bash
# Configuration of the local stack: every knob, with its default, in one place.
# Sourced by deploy/local/*.sh; tests/integration/stack.py mirrors these defaults.
# Override any of them from the environment, e.g. SIYU_KAFKA_PORT=29092 stack.sh up

SIYU_REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export SIYU_REPO_ROOT

export SIYU_LOCAL_DIR="${SIYU_LOCAL_DIR:-$SIYU_REPO_ROOT/.local}"
export SIYU_KAFKA_VERSION="${SIYU_KAFKA_VERSION:-3.9.1}"
export SIYU_KAFKA_PORT="${SIYU_KAFKA_PORT:-19092}"
export SIYU_KAFKA_CONTROLLER_PORT="${SIYU_KAFKA_CONTROLLER_PORT:-19093}"
export SIYU_KAFKA_HEAP="${SIYU_KAFKA_HEAP:-512m}"
export SIYU_CLICKHOUSE_PORT="${SIYU_CLICKHOUSE_PORT:-19000}"
export SIYU_CLICKHOUSE_HTTP_PORT="${SIYU_CLICKHOUSE_HTTP_PORT:-18123}"
# Seconds `up` waits for a service to answer, and `down` waits before SIGKILL.
export SIYU_STACK_TIMEOUT="${SIYU_STACK_TIMEOUT:-90}"
export SIYU_STOP_TIMEOUT="${SIYU_STOP_TIMEOUT:-30}"
# Python used for the Kafka readiness probe (needs kafka-python).
if [[ -z "${SIYU_PYTHON:-}" ]]; then
    if [[ -x "$SIYU_REPO_ROOT/.venv/bin/python" ]]; then
        SIYU_PYTHON="$SIYU_REPO_ROOT/.venv/bin/python"
    else
        SIYU_PYTHON="python3"
    fi
fi
export SIYU_PYTHON

# Derived paths (not meant to be overridden).
export SIYU_KAFKA_HOME="$SIYU_LOCAL_DIR/kafka"
export SIYU_KAFKA_LIBS="$SIYU_KAFKA_HOME/$SIYU_KAFKA_VERSION/libs"
export SIYU_CLICKHOUSE_HOME="$SIYU_LOCAL_DIR/clickhouse"
