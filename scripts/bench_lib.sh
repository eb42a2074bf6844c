# Shared by the benchmark scripts (sourced, not run): a private cluster in a
# temporary folder on ports from $1 (unless BENCH_BASE_PORT is set), stopped
# and removed on exit, and helpers to read `client bench` output.
WORK=$(mktemp -d)
export PAXOS_KV_DATA=$WORK/data PAXOS_KV_LOGS=$WORK/logs BASE_PORT=${BENCH_BASE_PORT:-$1}
trap './run_servers.sh stop >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT

# PAXOS_KV_BIN_DIR runs prebuilt binaries instead (e.g. to compare two builds).
if [ -z "${PAXOS_KV_BIN_DIR:-}" ]; then
  cargo build --release --bins
  export PAXOS_KV_BIN_DIR=target/release
fi

source scripts/bench_parse.sh
