#!/usr/bin/env bash
# How five local replicas (mutual TLS, fsync on) behave as the store grows. Prints:
#   - PUT throughput over 10k keys on a fresh cluster, then over KEYS keys after
#     loading KEYS keys of VALUE_BYTES each, and the ratio of the medians;
#   - each replica's resident memory next to the store's size, the bytes its
#     learner holds and the longest pause of its apply (learner) thread;
#   - the bytes written to disk per replica per byte of value PUT over the large
#     store (acceptor log, snapshots and their changes, the file system's journal),
#     which timing noise does not move: the counters of the disk holding the data,
#     divided by five (so anything else writing to that disk meanwhile counts too);
#   - how long a replica killed with -9 takes to restart and catch up after
#     missing MISSED writes of VALUE_BYTES.
# A benchmark, not a test: on a shared machine read medians and ratios.
#
#   scripts/bench_scale.sh [KEYS] [VALUE_BYTES] [ROUNDS] [SECONDS] [MISSED]
#   (defaults: 200000 1024 3 10 KEYS/4)
#   scripts/bench_scale.sh --help
#
# Uses its own data and log directories under a temporary folder and ports from
# BENCH_BASE_PORT (default 6201); stops every replica it started. BENCH_SERVER_FLAGS
# adds server flags (e.g. "--snapshot-log-bytes 1000000000000" to see what snapshots cost).
#
# Examples:
#   scripts/bench_scale.sh                     the full run (several minutes)
#   scripts/bench_scale.sh 20000 1024 1 5      a quick look
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/bench_usage.sh "$@"
KEYS=${1:-200000}
VALUE_BYTES=${2:-1024}
ROUNDS=${3:-3}
SECONDS_PER_RUN=${4:-10}
MISSED=${5:-$((KEYS / 4))}
source scripts/bench_lib.sh 6201
client() { ./run_client.sh "$@"; }
put_report=$(mktemp)
put_bytes=0
put_run() {
  client bench --clients 64 --duration "$SECONDS_PER_RUN" --value-size "$VALUE_BYTES" --keys "$1" > "$put_report"
  put_bytes=$((put_bytes + $(ok_count < "$put_report") * VALUE_BYTES))
  ops < "$put_report"
}
# Bytes written so far to the disk that holds the data, or nothing if it is not
# a block device. Not the processes' own counters (/proc/PID/io): they charge a
# write over a file's existing pages many times over, and miss the journal.
disk_written() {
  local device
  device=$(basename "$(df --output=source "$PAXOS_KV_DATA" | tail -1)")
  awk -v d="$device" '$3 == d { printf "%.0f\n", $10 * 512 }' /proc/diskstats
}
memory() {
  for id in 1 2 3 4 5; do
    pid=$(cat "$PAXOS_KV_DATA/$id/server.pid")
    echo "replica $id: RSS $(awk '/VmRSS/ { printf "%.0f MiB", $2 / 1024 }' "/proc/$pid/status")," \
      "of it on huge pages $(awk '/AnonHugePages/ { printf "%.0f MiB", $2 / 1024 }' "/proc/$pid/smaps_rollup")"
  done
  client sizes
}

read -r -a server_flags <<< "${BENCH_SERVER_FLAGS:-}"
./run_servers.sh 5 ${server_flags[@]+-- "${server_flags[@]}"} >/dev/null
small=()
for round in $(seq "$ROUNDS"); do
  small+=("$(put_run 10000)")
  echo "PUT over 10k keys, round $round: ${small[-1]} ops/s"
done

echo "loading $KEYS keys of $VALUE_BYTES bytes ..."
started=$(date +%s.%N)
client bench --clients 64 --fill --keys "$KEYS" --value-size "$VALUE_BYTES" | grep ops/s
echo "loaded in $(awk -v s="$started" -v e="$(date +%s.%N)" 'BEGIN { printf "%.0f", e - s }') s"
large=()
written_before=$(disk_written)
put_bytes=0
for round in $(seq "$ROUNDS"); do
  put_run "$KEYS" > "$put_report.ops"
  large+=("$(cat "$put_report.ops")")
  echo "PUT over $KEYS keys, round $round: ${large[-1]} ops/s"
done
written_after=$(disk_written)
if [[ -n "$written_before" && -n "$written_after" ]]; then
  echo "each replica wrote $(awk -v a="$written_before" -v b="$written_after" -v p="$put_bytes" \
    'BEGIN { printf "%.1f", (b - a) / 5 / p }') bytes to disk per byte PUT over $KEYS keys (the disk's counters, over five)"
else
  echo "bytes written to disk: unknown ($PAXOS_KV_DATA is not on a block device)"
fi
s=$(printf '%s\n' "${small[@]}" | median)
l=$(printf '%s\n' "${large[@]}" | median)
echo "PUT medians: $s ops/s at 10k keys, $l ops/s at $KEYS keys, ratio $(awk -v s="$s" -v l="$l" 'BEGIN { printf "%.2f", l / s }')"
memory

echo "killing replica 5, then $MISSED writes it misses ..."
kill -9 "$(cat "$PAXOS_KV_DATA/5/server.pid")"
client bench --clients 64 --fill --keys "$MISSED" --value-size "$VALUE_BYTES" --seed 2 | grep ops/s
./run_servers.sh 5 >/dev/null
rss() { awk -v what="$2" '$1 == what":" { printf "%.0f MiB", $2 / 1024 }' "/proc/$(cat "$PAXOS_KV_DATA/$1/server.pid")/status"; }
echo "replica 5 restarted from its own disk: RSS $(rss 5 VmRSS)"
client wait-caught-up --replica 5
echo "replica 5 caught up: peak RSS since its restart $(rss 5 VmHWM)"
memory
