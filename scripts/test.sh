#!/usr/bin/env bash
# The whole test suite: lint, chart checks, unit and integration tests against a real
# Kafka broker (testcontainers, STREAMAE_TEST_BOOTSTRAP, or the project's own broker).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
.venv/bin/ruff check streamae tests benchmarks scripts
bash scripts/helm_check.sh
# Two workers by default (STREAMAE_TEST_WORKERS=0 runs in one process); a test file stays
# on one worker, so its module fixtures are built once.
.venv/bin/python -m pytest -n "${STREAMAE_TEST_WORKERS:-2}" --dist loadfile "$@"
