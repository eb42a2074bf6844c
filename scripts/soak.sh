#!/usr/bin/env bash
# A bounded soak of the Paxos store: five replicas with random acceptor
# failures, a closed-loop workload, and a kill -9 of a random replica (then a
# restart) every few seconds; afterwards every replica's copy of every key
# must be the same. Exits non-zero on a failed request or a disagreement.
#
#   scripts/soak.sh [ROUNDS]     (default 5 kills; about 10 s per round)
#
# Examples:
#   scripts/soak.sh          five kills
#   scripts/soak.sh 20       twenty kills, about three and a half minutes
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
  -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
esac
rounds=${1:-5}
case "$rounds" in
  ''|*[!0-9]*) echo "usage: $0 [ROUNDS] (a number of kills); see $0 --help" >&2; exit 2 ;;
esac
if ./run_servers.sh status | grep -q running; then
  echo "a cluster of this checkout is running; stop it first (./run_servers.sh stop)" >&2
  exit 2
fi
trap './run_servers.sh stop >/dev/null' EXIT
rm -rf data
FAIL_MTBF_MS=2000 FAIL_DOWNTIME_MS=800 ./run_servers.sh --failures -- --snapshot-interval-slots 500 | tail -1
duration=$((rounds * 6 + 5))
./run_client.sh bench --clients 16 --duration "$duration" --keys 200 --put-ratio 0.7 > data/soak-bench.txt 2>&1 &
bench=$!
for round in $(seq "$rounds"); do
  sleep 4
  victim=$(( (RANDOM % 5) + 1 ))
  kill -9 "$(cat "data/$victim/server.pid")" 2>/dev/null || true
  echo "round $round: killed replica $victim with SIGKILL"
  sleep 1.5
  ./run_servers.sh >/dev/null 2>&1
done
wait "$bench" || true
cat data/soak-bench.txt
# Let lagging replicas catch up, then compare every replica's copy of every key.
sleep 5
target/release/client --servers "$(cat data/servers)" inspect $(seq -f "key-%g" 0 199) > data/soak-inspect.txt || true
disagreements=$(grep -c DISAGREE data/soak-inspect.txt || true)
failed=$(grep -oE '[0-9]+ failed' data/soak-bench.txt | grep -oE '[0-9]+' || echo 0)
echo "keys where replicas disagree: $disagreements; failed requests: $failed"
[ "$disagreements" = 0 ] && [ "$failed" = 0 ]
