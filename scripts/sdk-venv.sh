#!/usr/bin/env bash
# Creates target/sdk-venv with the pinned official Anthropic Python SDK,
# which the end-to-end suite runs against the relay.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=target/sdk-venv
PIN="anthropic==2.17.0"

if [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c 'import anthropic, sys; sys.exit(anthropic.__version__ != "2.17.0")' 2>/dev/null; then
  exit 0
fi
rm -rf "$VENV"
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check "$PIN"
echo "installed $PIN into $VENV"
