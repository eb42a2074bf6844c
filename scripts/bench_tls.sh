#!/usr/bin/env bash
# What TLS costs: PUT and GET throughput of five local replicas with mutual TLS
# and with --insecure, in one sitting, alternating, ROUNDS rounds of each; prints
# every run and the medians. A benchmark, not a test: on a shared machine read
# the ratio of medians, not the absolute figures.
#
#   scripts/bench_tls.sh [ROUNDS] [SECONDS]     (default 3 rounds of 8 s)
#   scripts/bench_tls.sh --help
#
# Uses its own data and log directories under a temporary folder and ports from
# BENCH_BASE_PORT (default 6101); stops every replica it started.
#
# Examples:
#   scripts/bench_tls.sh          three rounds of 8 s each way
#   scripts/bench_tls.sh 5 10
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/bench_usage.sh "$@"
ROUNDS=${1:-3}
SECONDS_PER_RUN=${2:-8}
source scripts/bench_lib.sh 6101

# run MODE PUT_RATIO -> prints ops/s
run() {
  local mode=$1 ratio=$2 extra=()
  [ "$mode" = insecure ] && extra=(-- --insecure)
  ./run_servers.sh stop >/dev/null 2>&1 || true
  rm -rf "$PAXOS_KV_DATA"
  ./run_servers.sh 5 ${extra[@]+"${extra[@]}"} >/dev/null
  ./run_client.sh bench --clients 64 --duration "$SECONDS_PER_RUN" --value-size 100 --keys 10000 --put-ratio "$ratio" | ops
}

for workload in put get; do
  ratio=1; [ $workload = get ] && ratio=0
  tls=() plain=()
  for round in $(seq "$ROUNDS"); do
    tls+=("$(run tls $ratio)")
    plain+=("$(run insecure $ratio)")
    echo "$workload round $round: tls ${tls[-1]} ops/s, insecure ${plain[-1]} ops/s"
  done
  t=$(printf '%s\n' "${tls[@]}" | median)
  p=$(printf '%s\n' "${plain[@]}" | median)
  echo "$workload medians: tls $t ops/s, insecure $p ops/s, tls/insecure $(awk -v t="$t" -v p="$p" 'BEGIN { printf "%.2f", t / p }')"
done
