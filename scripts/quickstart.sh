#!/usr/bin/env bash
# A new user's first run: install into .venv, start a local Apache Kafka (no Docker),
# stream the synthetic multi-sensor demo into it and run the daemon in the foreground,
# which logs each anomaly as it is published. Ctrl-C stops the daemon cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
PORT="${STREAMAE_QUICKSTART_PORT:-9092}"
python3 scripts/local_kafka.py start --port "$PORT"
export STREAMAE_KAFKA__BOOTSTRAP_SERVERS="${STREAMAE_KAFKA__BOOTSTRAP_SERVERS:-127.0.0.1:$PORT}"
export STREAMAE_KAFKA__INPUT_TOPICS="${STREAMAE_KAFKA__INPUT_TOPICS:-streamae.demo}"
export STREAMAE_CHECKPOINTS__DIRECTORY="${STREAMAE_CHECKPOINTS__DIRECTORY:-.cache/quickstart/checkpoints}"
export STREAMAE_METRICS_PORT="${STREAMAE_METRICS_PORT:-9100}"
export STREAMAE_ANOMALY_LOG="${STREAMAE_ANOMALY_LOG:-each}"  # the demo shows every anomaly
.venv/bin/streamae demo --count "${STREAMAE_QUICKSTART_COUNT:-30000}" --rate 500 &
demo=$!
trap 'kill $demo 2>/dev/null || true' EXIT
echo "quickstart: metrics on http://127.0.0.1:$STREAMAE_METRICS_PORT/metrics; Ctrl-C to stop" >&2
.venv/bin/streamae run "$@"
