#!/usr/bin/env bash
# Start, stop or list the replicas of this checkout.
#
#   ./run_servers.sh [N] [--protocol paxos|2pc] [--failures] [--trace] [-- SERVER_FLAGS...]
#                                                          start N replicas (default 5, Paxos);
#                                                          replicas already running are left alone,
#                                                          and replicas restarted while others run
#                                                          get the flags the cluster started with
#   ./run_servers.sh rejoin ID...                           restart replicas that lost or damaged their data
#                                                          directory: they set the remains aside, catch up
#                                                          and vote again only once it is safe (--rejoin)
#   ./run_servers.sh stop [ID...]                           stop those replicas (default: all)
#   ./run_servers.sh status                                 list replicas and whether they run
#
# The cluster is remembered in data/: its size, ports, protocol and flags. A later start
# (say from a new terminal) restarts missing replicas with them; settings that conflict
# with a running cluster are refused (stop it first, or drop the setting).
#
# Environment: BASE_PORT (default: the cluster's, else 5001; replica i listens on BASE_PORT+i-1),
# LOG_LEVEL (default info; debug shows every ACCEPT/ACCEPTED/DECIDE),
# with --failures: FAIL_MTBF_MS (default 10000), FAIL_DOWNTIME_MS (default 2000),
# FAIL_SEED (default 1), FAIL_MODE (durable or amnesia; default durable).
# --trace records every protocol message in logs/trace-<id>.jsonl (see `client timeline`).
# Replicas and clients prove who they are with mutual TLS: the first start creates the
# cluster's certificates in data/certs (CA, one per replica, one for clients; keys mode 0600)
# and run_client.sh uses them. `-- --insecure` runs plain TCP instead (loopback only).
# Data lives in data/<id>, logs in logs/server-<id>.log, pids in data/<id>/server.pid;
# data/cluster.id names the cluster (written into every data file), and once the
# first start is complete data/cluster.state says "existing": from then on a replica
# with an empty data directory is refused until it is started with `rejoin`.
# (PAXOS_KV_DATA and PAXOS_KV_LOGS move data/ and logs/ elsewhere).
# Replicas start with GLIBC_TUNABLES=glibc.malloc.hugetlb=1: their heap on transparent huge
# pages, which makes a large store faster (README, "Growth and memory"); a glibc.malloc.hugetlb
# value already in GLIBC_TUNABLES is kept (=0 keeps 4 KiB pages).
#
# Examples:
#   ./run_servers.sh                       five Paxos replicas on 5001..5005 (or the cluster in data/ as it was made)
#   ./run_servers.sh 3 --failures          three replicas whose acceptors fail at random
#   ./run_servers.sh --protocol 2pc        the two-phase-commit baseline (on a fresh data/)
#   LOG_LEVEL=debug ./run_servers.sh --trace -- --window-slots 8
#   ./run_servers.sh stop 2 && ./run_servers.sh     kill one replica, bring it back
set -euo pipefail
# Help changes nothing: answered before any directory is made.
case "${1:-}" in
  -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
esac
cd "$(dirname "$0")"

DATA=${PAXOS_KV_DATA:-data}
# The recorded cluster's first port, if there is one.
recorded_base_port() { [ -s "$DATA/servers" ] && cut -d, -f1 "$DATA/servers" | cut -d: -f2; }
recorded_size() { [ -s "$DATA/servers" ] && tr ',' '\n' < "$DATA/servers" | wc -l; }
BASE_PORT_GIVEN=${BASE_PORT:-}
BASE_PORT=${BASE_PORT:-$(recorded_base_port || echo 5001)}
LOGS=${PAXOS_KV_LOGS:-logs}
LOG_LEVEL=${LOG_LEVEL:-info}
case ":${GLIBC_TUNABLES:-}:" in
  *:glibc.malloc.hugetlb=*) ;;
  *) export GLIBC_TUNABLES=${GLIBC_TUNABLES:+$GLIBC_TUNABLES:}glibc.malloc.hugetlb=1 ;;
esac
# PAXOS_KV_BIN_DIR points at prebuilt binaries (the tests use it); otherwise
# the release build of this checkout is used and rebuilt when sources changed.
BIN_DIR=${PAXOS_KV_BIN_DIR:-target/release}
SERVER=$BIN_DIR/server

# Builds the release binaries unless they are newer than every source file.
build_if_needed() {
  [ -n "${PAXOS_KV_BIN_DIR:-}" ] && return
  if [ -x "$SERVER" ] && [ -x "$BIN_DIR/client" ] && [ -x "$BIN_DIR/certs" ] \
     && [ -z "$(find src Cargo.toml Cargo.lock -newer "$SERVER" 2>/dev/null | head -1)" ]; then
    return
  fi
  echo "building release binaries (cargo build --release) ..."
  cargo build --release --bins
}

# The error a replica stopped with, from the last error in its log, without
# backtrace frames (which, with RUST_BACKTRACE set, would hide the message).
error_of_log() {
  local line
  line=$(grep -nE '^error: |REFUSING TO START|panicked at' "$1" | tail -1 | cut -d: -f1)
  if [ -n "$line" ]; then
    tail -n +"$line" "$1" | sed '/[Ss]tack backtrace:/,$d' | head -6
  else
    grep -vE '^ +[0-9]+: |^ +at ' "$1" | tail -5
  fi
}

pid_of() { cat "$DATA/$1/server.pid" 2>/dev/null || true; }

# True if the pid recorded for replica $1 is a live server process of ours:
# known by its replica id and data directory, not by its binary, so that a
# replica started from other binaries (PAXOS_KV_BIN_DIR) is still stopped.
running() {
  local pid
  pid=$(pid_of "$1")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  case " $(ps -p "$pid" -o args=) " in
    *" --id $1 "*" --data-dir $DATA/$1 "*) return 0 ;;
    *) return 1 ;;
  esac
}

known_ids() {
  for f in "$DATA"/*/server.pid; do
    [ -e "$f" ] || continue
    basename "$(dirname "$f")"
  done | sort -n
}

stop() {
  local ids=("$@")
  [ ${#ids[@]} -gt 0 ] || mapfile -t ids < <(known_ids)
  for id in "${ids[@]}"; do
    if running "$id"; then
      local pid
      pid=$(pid_of "$id")
      kill "$pid"
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
      echo "stopped replica $id (pid $pid)"
    else
      echo "replica $id is not running"
    fi
    rm -f "$DATA/$id/server.pid"
  done
}

status() {
  local any=0
  for id in $(known_ids); do
    any=1
    if running "$id"; then echo "replica $id: running (pid $(pid_of "$id"))"; else echo "replica $id: not running"; fi
  done
  [ $any = 1 ] || echo "no replicas started from this checkout"
  [ -f "$DATA/servers" ] && echo "addresses: $(cat "$DATA/servers")"
  return 0
}

# The cluster's id, created with the cluster.
cluster_id() {
  if [ ! -s "$DATA/cluster.id" ]; then
    od -An -N8 -tx8 /dev/urandom | tr -d ' \n' > "$DATA/cluster.id"
  fi
  cat "$DATA/cluster.id"
}

# "new" until every replica of the first start has come up, "existing" after.
cluster_state() { cat "$DATA/cluster.state" 2>/dev/null || echo new; }

start() {
  local n="" failures=0 trace=0 protocol="" extra=() rejoin=() explicit=0
  while [ $# -gt 0 ]; do
    case "$1" in
      --failures) failures=1; explicit=1 ;;
      --trace) trace=1; explicit=1 ;;
      --protocol) shift; protocol=${1:?--protocol needs paxos or 2pc}; explicit=1 ;;
      --protocol=*) protocol=${1#--protocol=}; explicit=1 ;;
      --rejoin) shift; rejoin=("$@"); break ;;
      --) shift; extra=("$@"); explicit=1; break ;;
      [0-9]*) n=$1 ;;
      *) echo "unknown argument '$1'; see $0 --help" >&2; exit 2 ;;
    esac
    shift
  done
  case "$protocol" in ""|paxos|2pc) ;; *) echo "--protocol takes paxos or 2pc, not '$protocol'" >&2; exit 2 ;; esac
  local recorded_n some_running=0
  recorded_n=$(recorded_size || true)
  for id in $(known_ids); do running "$id" && some_running=1; done
  n=${n:-${recorded_n:-5}}
  if [ -n "$recorded_n" ] && [ "$recorded_n" != "$n" ] && [ -n "$(known_ids)" ]; then
    echo "$DATA holds a cluster of $recorded_n replicas; run './run_servers.sh stop' and remove $DATA to start $n" >&2
    exit 2
  fi
  local addrs=""
  for id in $(seq "$n"); do addrs+="${addrs:+,}127.0.0.1:$((BASE_PORT + id - 1))"; done
  if [ $some_running = 1 ] && [ "$addrs" != "$(cat "$DATA/servers")" ]; then
    echo "the cluster in $DATA runs at $(cat "$DATA/servers") (BASE_PORT=$(recorded_base_port)), not at BASE_PORT=$BASE_PORT_GIVEN;" >&2
    echo "unset BASE_PORT to use it, or run './run_servers.sh stop' first to move it" >&2
    exit 2
  fi
  local recorded_protocol
  recorded_protocol=$(cat "$DATA/protocol" 2>/dev/null || true)
  protocol=${protocol:-${recorded_protocol:-paxos}}
  if [ -n "$recorded_protocol" ] && [ "$recorded_protocol" != "$protocol" ]; then
    echo "$DATA holds a $recorded_protocol cluster; run './run_servers.sh stop' and remove $DATA to start $protocol" >&2
    exit 2
  fi
  local flags=(--protocol "$protocol")
  if [ $failures = 1 ]; then
    flags+=(--fail-mtbf-ms "${FAIL_MTBF_MS:-10000}" --fail-downtime-ms "${FAIL_DOWNTIME_MS:-2000}"
            --fail-seed "${FAIL_SEED:-1}" --fail-mode "${FAIL_MODE:-durable}")
  fi
  [ $trace = 1 ] && flags+=(--trace)
  flags+=(${extra[@]+"${extra[@]}"})
  if [ ${#rejoin[@]} -gt 0 ] && [ ! -f "$DATA/server.flags" ]; then
    echo "no cluster was started from $DATA; nothing to rejoin" >&2
    exit 2
  fi
  if [ -f "$DATA/server.flags" ]; then
    local recorded_flags=()
    mapfile -t recorded_flags < "$DATA/server.flags"
    if [ $explicit = 0 ]; then
      # Without flags, a start is a restart of the cluster as it was made.
      flags=("${recorded_flags[@]}")
    elif [ $some_running = 1 ] && [ "${flags[*]}" != "${recorded_flags[*]}" ]; then
      # Replicas restarted beside running ones must speak the cluster's
      # protocol with the cluster's settings.
      echo "the running cluster was started with: ${recorded_flags[*]}" >&2
      echo "run './run_servers.sh stop' first to change its flags, or start without them to restart missing replicas with the cluster's own" >&2
      exit 2
    fi
    [ $some_running = 1 ] && echo "cluster already running; restarting missing replicas with its flags: ${flags[*]}"
  fi
  build_if_needed
  # Everything is checked: from here on the cluster's settings are recorded.
  mkdir -p "$DATA" "$LOGS"
  echo "$addrs" > "$DATA/servers"
  printf '%s\n' "${flags[@]}" > "$DATA/server.flags"
  echo "$protocol" > "$DATA/protocol"
  local -A log_offset=()
  local id_flags=(--cluster-id "$(cluster_id)" --cluster-state "$(cluster_state)")
  if ! printf '%s\n' "${flags[@]}" | grep -qx -- --insecure; then
    if [ ! -f "$DATA/certs/client.pem" ] || [ ! -f "$DATA/certs/replica-$n.pem" ]; then
      "$BIN_DIR/certs" --out "$DATA/certs" --replicas "$n" >/dev/null
      echo "created the cluster's certificates in $DATA/certs"
    fi
    id_flags+=(--certs "$DATA/certs")
  fi
  for id in $(seq "$n"); do
    if running "$id"; then
      echo "replica $id already running (pid $(pid_of "$id"))"
      continue
    fi
    local rejoin_flag=()
    for r in ${rejoin[@]+"${rejoin[@]}"}; do [ "$r" = "$id" ] && rejoin_flag=(--rejoin); done
    mkdir -p "$DATA/$id"
    local replica_flags=()
    for flag in "${flags[@]}"; do
      if [ "$flag" = --trace ]; then replica_flags+=(--trace "$LOGS/trace-$id.jsonl"); else replica_flags+=("$flag"); fi
    done
    log_offset[$id]=$(( $(stat -c %s "$LOGS/server-$id.log" 2>/dev/null || echo 0) + 1 ))
    nohup "$SERVER" --id "$id" --replicas "$addrs" --data-dir "$DATA/$id" --log-level "$LOG_LEVEL" \
      "${id_flags[@]}" ${rejoin_flag[@]+"${rejoin_flag[@]}"} "${replica_flags[@]}" >> "$LOGS/server-$id.log" 2>&1 &
    echo $! > "$DATA/$id/server.pid"
    echo "started replica $id on 127.0.0.1:$((BASE_PORT + id - 1)) (pid $!), log $LOGS/server-$id.log"
  done
  # Ready when a replica started now logs that it listens: its own line, not
  # merely an answering port, which could belong to another process.
  for id in "${!log_offset[@]}"; do
    local deadline=$((SECONDS + 60))
    until tail -c +"${log_offset[$id]}" "$LOGS/server-$id.log" 2>/dev/null | grep -q " listening on "; do
      running "$id" || { echo "replica $id exited; from $LOGS/server-$id.log:" >&2; error_of_log "$LOGS/server-$id.log" >&2; exit 1; }
      [ $SECONDS -lt $deadline ] || { echo "replica $id did not start within 60 s; see $LOGS/server-$id.log" >&2; exit 1; }
      sleep 0.1
    done
  done
  # Every replica now has its identity: an empty data directory from here on
  # is a lost one, not a new one.
  echo existing > "$DATA/cluster.state"
  echo "cluster of $n $protocol replicas up at $addrs ($(tr '\n' ' ' < "$DATA/server.flags" | sed 's/ $//'))"
}

case "${1:-}" in
  stop) shift; stop "$@" ;;
  rejoin)
    shift
    [ $# -gt 0 ] || { echo "usage: $0 rejoin ID..." >&2; exit 2; }
    n=$(tr ',' '\n' < "$DATA/servers" 2>/dev/null | wc -l)
    [ "$n" -gt 0 ] || { echo "no cluster was started from $DATA; nothing to rejoin" >&2; exit 2; }
    start "$n" --rejoin "$@" ;;
  status) status ;;
  *) start "$@" ;;
esac
