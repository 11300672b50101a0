#!/usr/bin/env bash
# The whole test suite: lint, chart checks, unit and integration tests against a real
# Kafka broker (testcontainers, STREAMAE_TEST_BOOTSTRAP, or the project's own broker).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
.venv/bin/ruff check streamae tests benchmarks scripts
bash scripts/helm_check.sh
.venv/bin/python -m pytest "$@"
