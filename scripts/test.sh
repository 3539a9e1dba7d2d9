#!/usr/bin/env bash
# The whole test suite, as CI runs it, on a fresh machine with a Docker
# engine: builds the Redis image and the SDK venv when missing, checks
# formatting and lints, runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

# Test containers outlive the test process (a static is never dropped):
# remove this run's when the script ends, however it ends. Other runs on
# the same engine keep theirs.
export TEST_RUN_ID="${TEST_RUN_ID:-run-$$-$(date +%s)}"
cleanup() {
  local ids
  ids=$(docker ps -aq --filter "label=claude-relay-test.run=$TEST_RUN_ID" 2>/dev/null || true)
  [[ -z "$ids" ]] || docker rm -f $ids >/dev/null 2>&1 || true
}
trap cleanup EXIT

if ! docker info >/dev/null 2>&1; then
  echo "No Docker engine answers: start one (the tests run Redis in a container)." >&2
  exit 1
fi

scripts/build-redis-image.sh
scripts/sdk-venv.sh

# Snapshots are never written here: a changed error body fails the run.
export INSTA_UPDATE="${INSTA_UPDATE:-no}"
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-4}"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
