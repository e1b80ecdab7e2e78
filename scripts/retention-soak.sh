#!/usr/bin/env bash
# The long run of the retention model (tests/retention_model.rs): the same seeded random steps
# as the CI slice, many more of them. Prints the seed; reproduce a failure with
#   ECR_VAULT_MODEL_SEED=<seed> ECR_VAULT_MODEL_STEPS=<steps> scripts/retention-soak.sh
# Usage: scripts/retention-soak.sh [steps] (default 2000; about 1.5 s a step on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
export ECR_VAULT_MODEL_STEPS="${1:-${ECR_VAULT_MODEL_STEPS:-2000}}"
exec cargo test --locked -p ecr-vault-tests --test retention_model -- --nocapture
