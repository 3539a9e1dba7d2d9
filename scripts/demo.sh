#!/usr/bin/env bash
# The relay's main job on one machine: Redis, the mock upstream, the relay
# seeded from fixtures/demo.json, and one streamed request through it.
# Leaves everything running until Ctrl-C (or exits after the request with
# --once) and prints the two variables to point Claude Code or an SDK at it.
#
#   scripts/demo.sh           run and keep running
#   scripts/demo.sh --once    run one request, then stop everything
set -euo pipefail
cd "$(dirname "$0")/.."

ONCE=false
[[ "${1:-}" == "--once" ]] && ONCE=true

# shellcheck source=scripts/lib.sh
source scripts/lib.sh
trap 'exit 130' INT TERM

say() { printf '==> %s\n' "$*" >&2; }

say "building claude-relay and mock-upstream (release)"
cargo build --release --bins --workspace

if docker info >/dev/null 2>&1; then
  scripts/build-redis-image.sh >&2
  # The engine can hand out a port another starting container just took:
  # try again.
  for _ in 1 2 3; do
    CONTAINER=$(docker run -d --rm --label claude-relay-demo=1 -p 127.0.0.1::6379 \
      "${TEST_REDIS_IMAGE:-claude-relay-redis:local}") && break
    sleep 1
  done
  [[ -n "$CONTAINER" ]] || { echo "could not start the Redis container" >&2; exit 1; }
  REDIS_PORT=$(docker port "$CONTAINER" 6379/tcp | head -n1 | sed 's/.*://')
  say "Redis in container ${CONTAINER:0:12} on 127.0.0.1:$REDIS_PORT"
elif command -v redis-server >/dev/null 2>&1; then
  REDIS_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no >"$WORK/redis.log" 2>&1 &
  PIDS+=($!)
  say "no Docker engine: Redis from the PATH on 127.0.0.1:$REDIS_PORT"
else
  echo "Neither a Docker engine nor redis-server is available: start Docker or install redis-server." >&2
  exit 1
fi
for _ in $(seq 1 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT") 2>/dev/null && break
  sleep 0.05
done

"$BIN/mock-upstream" --port 0 --profiles fixtures/mock-profiles.json >"$WORK/mock.log" 2>&1 &
PIDS+=($!)
MOCK_URL=$(listening_url "$WORK/mock.log" "mock-upstream")
say "mock upstream on $MOCK_URL"

export RELAY_REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
export RELAY_REDIS_PREFIX="demo:"
export RELAY_LISTEN="${DEMO_LISTEN:-127.0.0.1:0}"
# Account credentials are stored encrypted under this key; a throwaway
# Redis gets a throwaway key, in a file the operator commands can read too.
random_hex >"$WORK/account.key"
export RELAY_ACCOUNT_KEY_FILE="$WORK/account.key"
DEMO_KEY="cr_$(random_hex)"
MOCK_URL="$MOCK_URL" DEMO_KEY="$DEMO_KEY" "$BIN/claude-relay" seed fixtures/demo.json >&2

"$BIN/claude-relay" serve >"$WORK/relay.log" 2>&1 &
PIDS+=($!)
RELAY_URL=$(listening_url "$WORK/relay.log" "claude-relay")
say "relay on $RELAY_URL"

say "streaming one request through the relay"
curl -sS -N "$RELAY_URL/v1/messages" \
  -H "x-api-key: $DEMO_KEY" \
  -H "content-type: application/json" \
  -H "anthropic-version: 2023-06-01" \
  -d '{"model":"claude-sonnet-4-5-20250929","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"Say hi"}]}'
echo

say "the accounts, as an operator sees them"
"$BIN/claude-relay" accounts list

if $ONCE; then
  say "done (--once)"
  exit 0
fi

echo
echo "ANTHROPIC_BASE_URL=$RELAY_URL ANTHROPIC_API_KEY=$DEMO_KEY"
echo
echo "Operator commands (keys, accounts, usage, limits, seed) against this demo, from another shell:"
echo "  export RELAY_REDIS_URL=$RELAY_REDIS_URL RELAY_REDIS_PREFIX=$RELAY_REDIS_PREFIX RELAY_ACCOUNT_KEY_FILE=$RELAY_ACCOUNT_KEY_FILE"
echo "  $BIN/claude-relay accounts list"
echo
say "running; relay log: tail -f $WORK/relay.log; Ctrl-C stops everything"
wait "${PIDS[@]}"
