#!/usr/bin/env bash
# This store against etcd on the same machine, in one sitting. Five etcd members
# (etcd 3.4, Debian's etcd-server, TLS to clients and between members, fsync on)
# and five replicas of this store (mutual TLS, fsync on) take the same kind of
# load, one cluster at a time, alternating, ROUNDS rounds: closed-loop clients
# with one request outstanding each, 100-byte values over 10k keys; PUT at 64
# clients, linearizable GET at 64 clients, PUT from one client. Prints every run,
# then the medians and the ratios.
#
# The load generators differ, as they must: this store's own `client bench`
# (pipelined connections from four threads) and, for etcd, wrk (Debian's
# package) posting to etcd's JSON gateway (/v3/kv/put, /v3/kv/range), a
# connection per client, sent to the leader. etcd's members check no client
# certificates (wrk cannot present one); this store's replicas do.
# Installs etcd-server, etcd-client and wrk with apt-get when they are missing.
# A benchmark, not a test: on a shared machine read the medians and ratios.
#
#   scripts/bench_etcd.sh [ROUNDS] [SECONDS]     (default 3 rounds of 8 s)
#   scripts/bench_etcd.sh --help
#
# Uses temporary folders, this store's ports from BENCH_BASE_PORT (default 6301)
# and etcd's from 23791 (clients) and 23801 (peers); stops everything it started.
#
# Examples:
#   scripts/bench_etcd.sh          three rounds of 8 s per workload
#   scripts/bench_etcd.sh 1 4      a quick look
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/bench_usage.sh "$@"
ROUNDS=${1:-3}
SECONDS_PER_RUN=${2:-8}
ETCD_CLIENT_PORT=23790
ETCD_PEER_PORT=23800

if ! command -v etcd >/dev/null || ! command -v etcdctl >/dev/null || ! command -v wrk >/dev/null; then
  echo "installing etcd-server, etcd-client and wrk from the distribution's packages ..."
  apt-get install -y -q etcd-server etcd-client wrk >/dev/null || {
    apt-get update -q >/dev/null && apt-get install -y -q etcd-server etcd-client wrk >/dev/null
  }
fi

source scripts/bench_lib.sh 6301
ETCD=$WORK/etcd
mkdir -p "$ETCD"

# A CA and one certificate for every member, valid for 127.0.0.1 as server and client.
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=bench-ca \
  -keyout "$ETCD/ca-key.pem" -out "$ETCD/ca.pem" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj /CN=etcd -keyout "$ETCD/key.pem" -out "$ETCD/req.pem" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n' > "$ETCD/ext"
openssl x509 -req -in "$ETCD/req.pem" -CA "$ETCD/ca.pem" -CAkey "$ETCD/ca-key.pem" -CAcreateserial -days 2 \
  -extfile "$ETCD/ext" -out "$ETCD/cert.pem" 2>/dev/null

etcdctl_() { ETCDCTL_API=3 etcdctl --cacert "$ETCD/ca.pem" "$@"; }
endpoints() {
  local i list=()
  for i in 1 2 3 4 5; do list+=("https://127.0.0.1:$((ETCD_CLIENT_PORT + i))"); done
  (IFS=,; echo "${list[*]}")
}

start_etcd() {
  local i cluster=()
  rm -rf "$ETCD"/m*
  for i in 1 2 3 4 5; do cluster+=("m$i=https://127.0.0.1:$((ETCD_PEER_PORT + i))"); done
  for i in 1 2 3 4 5; do
    etcd --name "m$i" --data-dir "$ETCD/m$i" --logger zap --log-level error \
      --listen-client-urls "https://127.0.0.1:$((ETCD_CLIENT_PORT + i))" \
      --advertise-client-urls "https://127.0.0.1:$((ETCD_CLIENT_PORT + i))" \
      --listen-peer-urls "https://127.0.0.1:$((ETCD_PEER_PORT + i))" \
      --initial-advertise-peer-urls "https://127.0.0.1:$((ETCD_PEER_PORT + i))" \
      --initial-cluster "$(IFS=,; echo "${cluster[*]}")" --initial-cluster-state new \
      --initial-cluster-token bench --cert-file "$ETCD/cert.pem" --key-file "$ETCD/key.pem" \
      --peer-cert-file "$ETCD/cert.pem" --peer-key-file "$ETCD/key.pem" \
      --peer-trusted-ca-file "$ETCD/ca.pem" --peer-client-cert-auth \
      > "$ETCD/m$i.log" 2>&1 &
    echo $! > "$ETCD/m$i.pid"
  done
  local deadline=$((SECONDS + 30))
  until etcdctl_ --endpoints "$(endpoints)" endpoint health >/dev/null 2>&1; do
    if ((SECONDS > deadline)); then
      echo "etcd did not come up within 30 s; its logs:" >&2
      tail -n 5 "$ETCD"/m*.log >&2
      exit 1
    fi
    sleep 0.2
  done
}

stop_etcd() {
  local pid
  for pid in "$ETCD"/m*.pid; do
    [ -f "$pid" ] && kill "$(cat "$pid")" 2>/dev/null || true
  done
  wait 2>/dev/null || true
}

trap 'stop_etcd; ./run_servers.sh stop >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT

etcd_leader() {
  etcdctl_ --endpoints "$(endpoints)" endpoint status -w simple | awk -F', ' '$5 == "true" { print $1; exit }'
}

cat > "$ETCD/load.lua" <<'EOF'
-- PUT or linearizable GET of a random key of 10k, 100-byte values, base64 as the gateway wants.
local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local function base64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local quad = {}
    for j = 3, 0, -1 do
      local index = math.floor(n / 64 ^ j) % 64
      quad[#quad + 1] = alphabet:sub(index + 1, index + 1)
    end
    if not b then quad[3] = "=" end
    if not c then quad[4] = "=" end
    out[#out + 1] = table.concat(quad)
  end
  return table.concat(out)
end
local keys, value, get = {}, base64(string.rep("x", 100)), false
for i = 0, 9999 do keys[i] = base64("key-" .. i) end
function init(args) get = args[1] == "get" end
function request()
  local key = keys[math.random(0, 9999)]
  if get then
    return wrk.format("POST", "/v3/kv/range", nil, '{"key":"' .. key .. '"}')
  end
  return wrk.format("POST", "/v3/kv/put", nil, '{"key":"' .. key .. '","value":"' .. value .. '"}')
end
EOF

# A wrk report -> "ops/s p50_ms p99_ms errors"
wrk_figures() {
  awk '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
    $1 == "50%" { p50 = ms($2) } $1 == "99%" { p99 = ms($2) }
    $1 == "Requests/sec:" { ops = $2 }
    /Non-2xx/ { errors += $NF } /Socket errors/ { errors += 1 }
    END { printf "%.0f %.2f %.2f %d\n", ops, p50, p99, errors }'
}
# A `client bench` report -> "ops/s p50_ms p99_ms failed"
store_figures() {
  awk '$2 == "ops/s" && $1 ~ /^[0-9.]+$/ {
    for (i = 1; i <= NF; i++) { if ($i == "p50") p50 = $(i + 1); if ($i == "p99") p99 = $(i + 1); if ($i == "failed") failed = $(i - 1) }
    printf "%.0f %.2f %.2f %d\n", $1, p50, p99, failed; exit }'
}

run_etcd() { # WORKLOAD CLIENTS
  local mode=put leader
  [ "$1" = get ] && mode=get
  start_etcd
  leader=$(etcd_leader)
  wrk -t "$(( $2 < 2 ? 1 : 2 ))" -c "$2" -d "${SECONDS_PER_RUN}s" --latency -s "$ETCD/load.lua" "$leader" -- "$mode" \
    | wrk_figures
  stop_etcd
}

run_store() { # WORKLOAD CLIENTS
  local ratio=1
  [ "$1" = get ] && ratio=0
  ./run_servers.sh stop >/dev/null 2>&1 || true
  rm -rf "$PAXOS_KV_DATA"
  ./run_servers.sh 5 >/dev/null
  ./run_client.sh bench --clients "$2" --duration "$SECONDS_PER_RUN" --value-size 100 --keys 10000 \
    --put-ratio "$ratio" 2>/dev/null | store_figures
  ./run_servers.sh stop >/dev/null
}

declare -A results
for round in $(seq "$ROUNDS"); do
  for workload in "put 64" "get 64" "put 1"; do
    read -r kind clients <<< "$workload"
    e=$(run_etcd "$kind" "$clients")
    s=$(run_store "$kind" "$clients")
    results["$kind $clients etcd"]+="$e"$'\n'
    results["$kind $clients store"]+="$s"$'\n'
    echo "round $round, $kind at $clients client(s): etcd $e; paxos-kv $s   (ops/s p50 p99 ms, errors)"
  done
done

column_median() { awk -v c="$1" 'NF { print $c }' | median; }
echo
printf '%-22s %12s %12s %8s %10s %10s\n' workload "etcd ops/s" "store ops/s" ratio "etcd p99" "store p99"
for workload in "put 64" "get 64" "put 1"; do
  e_ops=$(column_median 1 <<< "${results["$workload etcd"]}")
  s_ops=$(column_median 1 <<< "${results["$workload store"]}")
  e_p50=$(column_median 2 <<< "${results["$workload etcd"]}")
  s_p50=$(column_median 2 <<< "${results["$workload store"]}")
  e_p99=$(column_median 3 <<< "${results["$workload etcd"]}")
  s_p99=$(column_median 3 <<< "${results["$workload store"]}")
  printf '%-22s %12s %12s %8s %10s %10s   p50 ms: etcd %s, store %s\n' "$workload client(s)" "$e_ops" "$s_ops" \
    "$(awk -v s="$s_ops" -v e="$e_ops" 'BEGIN { printf "%.1fx", s / e }')" "$e_p99" "$s_p99" "$e_p50" "$s_p50"
done
