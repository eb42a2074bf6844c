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
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
  -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac
ROUNDS=${1:-3}
SECONDS_PER_RUN=${2:-8}
WORK=$(mktemp -d)
export PAXOS_KV_DATA=$WORK/data PAXOS_KV_LOGS=$WORK/logs BASE_PORT=${BENCH_BASE_PORT:-6101}
trap './run_servers.sh stop >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT

cargo build --release --quiet --bins
export PAXOS_KV_BIN_DIR=target/release

# run MODE WORKLOAD -> prints "ops/s p50 p99"
run() {
  local mode=$1 ratio=$2 extra=()
  [ "$mode" = insecure ] && extra=(-- --insecure)
  ./run_servers.sh stop >/dev/null 2>&1 || true
  rm -rf "$PAXOS_KV_DATA"
  ./run_servers.sh 5 ${extra[@]+"${extra[@]}"} >/dev/null
  local out
  out=$(./run_client.sh bench --clients 64 --duration "$SECONDS_PER_RUN" --value-size 100 --keys 10000 --put-ratio "$ratio")
  echo "$out" | awk '/ops\/s/ { for (i = 1; i <= NF; i++) if ($(i) ~ /ops\/s/) print $(i-1) }' | head -1
}

median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

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
