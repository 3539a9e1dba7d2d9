#!/usr/bin/env bash
# Measures what the relay costs: the same load straight to the mock
# upstream (the baseline) and through the relay, in one run, reported as
# ratios. Also the relay's memory: idle, and its peak under the load.
#
#   scripts/bench.sh                 default: 10 s per measurement
#   BENCH_SECONDS=30 scripts/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_RUN="${BENCH_SECONDS:-10}"
CONNECTIONS="${BENCH_CONNECTIONS:-16}"

command -v wrk >/dev/null || {
  echo "installing wrk from Debian's packages" >&2
  SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wrk >/dev/null
}

# shellcheck source=scripts/lib.sh
source scripts/lib.sh

cargo build --release --quiet --bins --workspace
scripts/build-redis-image.sh >/dev/null
# Redis on the host's network, as a relay reaches it in production: a
# mapped port would put the engine's userland proxy in every round trip.
REDIS_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
CONTAINER=$(docker run -d --rm --label claude-relay-bench=1 --network host \
  "${TEST_REDIS_IMAGE:-claude-relay-redis:local}" \
  /usr/bin/redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no)
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT") 2>/dev/null && break; sleep 0.05; done

# No journal: the mock would otherwise keep every request of the run.
"$BIN"/mock-upstream --port 0 --profiles fixtures/mock-profiles.json --journal-limit 0 \
  >"$WORK/mock.log" 2>&1 &
PIDS+=($!)
MOCK_URL=$(listening_url "$WORK/mock.log")

export RELAY_REDIS_URL="redis://127.0.0.1:$REDIS_PORT" RELAY_REDIS_PREFIX="bench:" RELAY_LISTEN="127.0.0.1:0"
export RUST_LOG=warn
# Account credentials are stored encrypted under this key.
export RELAY_ACCOUNT_KEY="$(random_hex)"
KEY="cr_$(random_hex)"
MOCK_URL="$MOCK_URL" DEMO_KEY="$KEY" "$BIN"/claude-relay seed fixtures/demo.json >/dev/null
"$BIN"/claude-relay serve >"$WORK/relay.log" 2>&1 &
RELAY_PID=$!
PIDS+=($RELAY_PID)
RELAY_URL=$(listening_url "$WORK/relay.log")
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
peak() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }
RELAY_IDLE=$(rss "$RELAY_PID")

# One measurement: prints "rps p50_us p99_us errors".
measure() {
  local url=$1 key=$2 stream=$3 connections=$4
  local threads=2
  [[ $connections -ge 2 ]] || threads=1
  BENCH_KEY="$key" BENCH_STREAM="$stream" wrk -t"$threads" -c"$connections" -d"${SECONDS_PER_RUN}s" \
    -s scripts/bench/messages.lua "$url/v1/messages" |
    sed -n 's/^RESULT rps=\([0-9.]*\) p50_us=\([0-9]*\) p99_us=\([0-9]*\) errors=\([0-9]*\)$/\1 \2 \3 \4/p'
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "n/a"; else printf "%.2f", a / b }'; }

# Warm both paths (connection pools, caches).
measure "$MOCK_URL" sk-up-A false 4 >/dev/null
BENCH_SECONDS_SAVE=$SECONDS_PER_RUN; SECONDS_PER_RUN=2
measure "$RELAY_URL" "$KEY" false 4 >/dev/null
SECONDS_PER_RUN=$BENCH_SECONDS_SAVE

printf '| load | path | req/s | p50 ms | p99 ms | errors |\n|---|---|---|---|---|---|\n'
declare -A RESULT
for load in "json $CONNECTIONS" "sse $CONNECTIONS" "sse 1"; do
  set -- $load
  kind=$1; conns=$2; stream=false; [[ $kind == sse ]] && stream=true
  for path in baseline relay; do
    if [[ $path == baseline ]]; then url=$MOCK_URL; key=sk-up-A; else url=$RELAY_URL; key=$KEY; fi
    read -r rps p50 p99 errors < <(measure "$url" "$key" "$stream" "$conns")
    RESULT[$kind-$conns-$path]="$rps $p50 $p99"
    printf '| %s, %s conn | %s | %s | %.2f | %.2f | %s |\n' "$kind" "$conns" "$path" "$rps" \
      "$(awk -v v="$p50" 'BEGIN{print v/1000}')" "$(awk -v v="$p99" 'BEGIN{print v/1000}')" "$errors"
  done
done

echo
printf '| load | relay/baseline req/s | relay/baseline p50 | relay - baseline p50 (ms) |\n|---|---|---|---|\n'
for load in "json-$CONNECTIONS" "sse-$CONNECTIONS" "sse-1"; do
  read -r b_rps b_p50 _ <<<"${RESULT[$load-baseline]}"
  read -r r_rps r_p50 _ <<<"${RESULT[$load-relay]}"
  printf '| %s | %s | %s | %s |\n' "$load" "$(ratio "$r_rps" "$b_rps")" "$(ratio "$r_p50" "$b_p50")" \
    "$(awk -v a="$r_p50" -v b="$b_p50" 'BEGIN{printf "%.3f", (a-b)/1000}')"
done

echo
MOCK_PID=${PIDS[0]}
printf 'memory (KiB): relay idle %s, relay peak under load %s (x%s); mock upstream peak under the same load %s (relay/mock x%s)\n' \
  "$RELAY_IDLE" "$(peak "$RELAY_PID")" "$(ratio "$(peak "$RELAY_PID")" "$RELAY_IDLE")" \
  "$(peak "$MOCK_PID")" "$(ratio "$(peak "$RELAY_PID")" "$(peak "$MOCK_PID")")"
