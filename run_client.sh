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

DATA=${PAXOS_KV_DATA:-data}
BIN_DIR=${PAXOS_KV_BIN_DIR:-target/release}
alive=0
for f in "$DATA"/*/server.pid; do
  [ -e "$f" ] || continue
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null && ps -p "$pid" -o args= | grep -q "$BIN_DIR/server"; then alive=1; break; fi
done
if [ $alive = 0 ]; then
  echo "no replica of this checkout is running; starting a cluster with ./run_servers.sh" >&2
  ./run_servers.sh >&2
elif [ -z "${PAXOS_KV_BIN_DIR:-}" ] && { [ ! -x "$BIN_DIR/client" ] || [ -n "$(find src Cargo.toml Cargo.lock -newer "$BIN_DIR/client" 2>/dev/null | head -1)" ]; }; then
  cargo build --release --bins
fi
export PAXOS_KV_SERVERS
PAXOS_KV_SERVERS=$(cat "$DATA/servers")
if grep -qx -- --insecure "$DATA/server.flags" 2>/dev/null; then
  set -- --insecure "$@"
else
  export PAXOS_KV_CERTS=${PAXOS_KV_CERTS:-$DATA/certs}
fi
exec "$BIN_DIR/client" "$@"
