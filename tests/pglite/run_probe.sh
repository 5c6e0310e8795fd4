#!/usr/bin/env bash
# Start a fresh server, run verify.py in MODE, stop the server. Usage: ./run_probe.sh [main|copy-in|copy-out|pipeline] [port]
set -u
cd "$(dirname "$0")"
MODE=${1:-main}; PORT=${2:-55432}
node server.mjs "$PORT" > /tmp/pglite-$PORT.out 2> /tmp/pglite-$PORT.err & PID=$!
for _ in $(seq 1 200); do grep -q READY /tmp/pglite-$PORT.out 2>/dev/null && break; sleep 0.05; done
timeout 300 ../../.venv/bin/python verify.py "$PORT" "$MODE"
kill -TERM $PID 2>/dev/null; wait $PID; echo "server exit code: $?"
