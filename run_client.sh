#!/usr/bin/env bash
# Run the client against this checkout's cluster. Commands that use the store
# (the prompt, put, get, delete, demo, bench) start the cluster first when none
# of its replicas runs; commands that look at it (status, watch, inspect, ...)
# and --help start nothing.
#
#   ./run_client.sh                     interactive prompt (or reads commands from a pipe)
#   ./run_client.sh put KEY VALUE       one-shot: put, get, delete, status
#   ./run_client.sh demo                five PUTs, GETs and DELETEs
#   ./run_client.sh bench [FLAGS]       throughput and latency
#   ./run_client.sh --help              every command; `./run_client.sh CMD --help` for one
set -euo pipefail
cd "$(dirname "$0")"

DATA=${PAXOS_KV_DATA:-data}
BIN_DIR=${PAXOS_KV_BIN_DIR:-target/release}

# The subcommand (the first word that names one), and whether help was asked for.
command=prompt help=0
[ "${1:-}" = help ] && help=1
for arg in "$@"; do
  case "$arg" in
    -h|--help|-V|--version) help=1 ;;
  esac
done
for arg in "$@"; do
  case "$arg" in
    prompt|put|get|delete|status|inspect|demo|compare|lesson|watch|timeline|bench|sizes|wait-caught-up) command=$arg; break ;;
  esac
done

binaries_stale() {
  [ -z "${PAXOS_KV_BIN_DIR:-}" ] && { [ ! -x "$BIN_DIR/client" ] || [ -n "$(find src Cargo.toml Cargo.lock -newer "$BIN_DIR/client" 2>/dev/null | head -1)" ]; }
}

if [ $help = 1 ] || [ "$command" = compare ] || [ "$command" = timeline ] || [ "$command" = lesson ]; then
  # These need no cluster.
  binaries_stale && cargo build --release --bins
  exec "$BIN_DIR/client" "$@"
fi

alive=0
for f in "$DATA"/*/server.pid; do
  [ -e "$f" ] || continue
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null && ps -p "$pid" -o args= | grep -q "$BIN_DIR/server"; then alive=1; break; fi
done
case "$command" in
  prompt|put|get|delete|demo|bench) uses_store=1 ;;
  *) uses_store=0 ;;
esac
if [ $alive = 0 ] && [ $uses_store = 1 ]; then
  echo "no replica of this checkout is running; starting a cluster with ./run_servers.sh" >&2
  ./run_servers.sh >&2
elif binaries_stale; then
  cargo build --release --bins
fi
if [ ! -s "$DATA/servers" ]; then
  echo "no cluster was started from this checkout; ./run_servers.sh starts one" >&2
  exit 2
fi
export PAXOS_KV_SERVERS
PAXOS_KV_SERVERS=$(cat "$DATA/servers")
if grep -qx -- --insecure "$DATA/server.flags" 2>/dev/null; then
  set -- --insecure "$@"
else
  export PAXOS_KV_CERTS=${PAXOS_KV_CERTS:-$DATA/certs}
fi
exec "$BIN_DIR/client" "$@"
