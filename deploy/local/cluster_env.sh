# shellcheck shell=bash
# Configuration of the local multi-node cluster (deploy/local/cluster.sh): a ZooKeeper, two
# ClickHouse servers forming one shard of two replicas, and a three-broker KRaft Kafka.
# Sourced after env.sh; every knob has a default and can be overridden from the environment.
# Ports are apart from the single-node dev stack's (19092/19093/19000/18123), which keeps
# running untouched next to the cluster. tests/integration/cluster.py reads these values.

export SIYU_CLUSTER_HOME="${SIYU_CLUSTER_HOME:-$SIYU_LOCAL_DIR/cluster}"
# Name of the ClickHouse cluster in <remote_servers> (SIYU_CLICKHOUSE_CLUSTER of siyu).
export SIYU_CLUSTER_NAME="${SIYU_CLUSTER_NAME:-siyu_cluster}"
export SIYU_CLUSTER_ZK_PORT="${SIYU_CLUSTER_ZK_PORT:-22181}"
export SIYU_CLUSTER_ZK_HEAP="${SIYU_CLUSTER_ZK_HEAP:-128m}"
# ClickHouse replica i (1-based) listens on BASE+i for each of its three ports.
export SIYU_CLUSTER_CH_REPLICAS="${SIYU_CLUSTER_CH_REPLICAS:-2}"
export SIYU_CLUSTER_CH_TCP_BASE="${SIYU_CLUSTER_CH_TCP_BASE:-29000}"
export SIYU_CLUSTER_CH_HTTP_BASE="${SIYU_CLUSTER_CH_HTTP_BASE:-28120}"
export SIYU_CLUSTER_CH_INTERSERVER_BASE="${SIYU_CLUSTER_CH_INTERSERVER_BASE:-29010}"
# Kafka broker i (1-based, also its node.id) listens on BASE+i; its controller on CONTROLLER_BASE+i.
export SIYU_CLUSTER_KAFKA_BROKERS="${SIYU_CLUSTER_KAFKA_BROKERS:-3}"
export SIYU_CLUSTER_KAFKA_BASE="${SIYU_CLUSTER_KAFKA_BASE:-29090}"
export SIYU_CLUSTER_KAFKA_CONTROLLER_BASE="${SIYU_CLUSTER_KAFKA_CONTROLLER_BASE:-29190}"
export SIYU_CLUSTER_KAFKA_HEAP="${SIYU_CLUSTER_KAFKA_HEAP:-384m}"
