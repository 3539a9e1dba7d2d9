# Shared by the scripts that start the relay and its mock by hand
# (demo.sh, bench.sh): process bookkeeping and the listening line.
# Source it after `cd` to the repository root.

WORK=$(mktemp -d)
PIDS=()
CONTAINER=""

# Stops what the script started, by pid and container id, and removes its
# scratch folder.
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  [[ -z "$CONTAINER" ]] || docker rm -f "$CONTAINER" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# Waits for "listening on URL" in a log file and prints the URL.
listening_url() {
  local log=$1 name=${2:-the process}
  for _ in $(seq 1 200); do
    local line
    line=$(grep -m1 '^listening on ' "$log" 2>/dev/null || true)
    if [[ -n "$line" ]]; then echo "${line#listening on }"; return 0; fi
    sleep 0.05
  done
  echo "$name did not start; its output:" >&2
  cat "$log" >&2
  return 1
}

# 64 random lowercase hex characters.
random_hex() { od -An -tx1 -N32 /dev/urandom | tr -d ' \n'; }

# Where cargo puts release binaries (CARGO_TARGET_DIR when set, else
# ./target), as an absolute path, so printed commands work from anywhere.
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
[[ "$TARGET_DIR" == /* ]] || TARGET_DIR="$PWD/$TARGET_DIR"
BIN="$TARGET_DIR/release"
