#!/usr/bin/env bash
# Run the client against this checkout's cluster, starting the cluster first
# when none of its replicas runs.
#
#   ./run_client.sh                     interactive prompt (or reads commands from a pipe)
#   ./run_client.sh put KEY VALUE       one-shot: put, get, delete, status
#   ./run_client.sh demo                five PUTs, GETs and DELETEs
#   ./run_client.sh bench [FLAGS]       throughput and latency (see --help)
set -euo pipefail
cd "$(dirname "$0")"

alive=0
for f in data/*/server.pid; do
  [ -e "$f" ] || continue
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null && ps -p "$pid" -o args= | grep -q target/release/server; then alive=1; break; fi
done
if [ $alive = 0 ]; then
  echo "no replica of this checkout is running; starting a cluster with ./run_servers.sh" >&2
  ./run_servers.sh >&2
else
  cargo build --release --quiet --bins
fi
export PAXOS_KV_SERVERS
PAXOS_KV_SERVERS=$(cat data/servers)
exec target/release/client "$@"
