#!/usr/bin/env bash
# Runs each Lambda function on the sample events in events/ against the local stack, the way a
# developer tries a change before `sam deploy`: cargo-lambda's emulator serves the Lambda APIs,
# each function binary runs against it with the environment the template would set (pointed at
# the stack: SeaweedFS as the vault, moto as ECR, the stack's registry as ECR's data plane), and
# `cargo lambda invoke --data-file events/…` sends each event.
#
# The binaries are the workspace's own debug build, shared with the tests; `cargo lambda watch`
# without --only-lambda-apis would rebuild the workspace under its own flags.
#
# Each response is printed and checked for the outcome its event should have; the script fails
# on the first that differs. Everything it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
cargo build --quiet -p ecr-vault-testkit --bin ecr-vault-stack \
  -p ecr-vault-backup-fn -p ecr-vault-restore-fn -p ecr-vault-gc-fn

state="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -- "-$p" 2>/dev/null || kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$state"
}
trap cleanup EXIT
setsid target/debug/ecr-vault-stack up --dir "$state" --seed > "$state/stack.log" 2>&1 &
pids+=($!)
while [ ! -f "$state/env" ]; do
  kill -0 "${pids[0]}" 2>/dev/null || { cat "$state/stack.log"; exit 1; }
  sleep 0.2
done
# shellcheck disable=SC1091
source "$state/env"

# The template's runtime contract (docs/deploy.md), on the stack. GOVERNANCE and one day, as
# the dev config environment.
{
  env | grep -E '^AWS_' | while IFS='=' read -r k v; do printf '%s=%q\n' "$k" "$v"; done
  cat <<VARS
AWS_EC2_METADATA_DISABLED=true
ECR_VAULT_BUCKET=$ECR_VAULT_TEST_BUCKET
ECR_VAULT_PREFIX=local/
ECR_VAULT_LOCK_MODE=GOVERNANCE
ECR_VAULT_RETENTION_DAYS=1
ECR_VAULT_LOCK_SLACK_DAYS=1
ECR_VAULT_REGISTRY_URL=$ECR_VAULT_TEST_REGISTRY_URL
ECR_VAULT_PART_SIZE_MIB=6
ECR_VAULT_PARTS_IN_FLIGHT=2
VARS
} > "$state/functions.env"

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
setsid cargo lambda watch --only-lambda-apis --invoke-address 127.0.0.1 --invoke-port "$port" \
  > "$state/emulator.log" 2>&1 &
pids+=($!)
until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
  kill -0 "${pids[1]}" 2>/dev/null || { cat "$state/emulator.log"; exit 1; }
  sleep 0.2
done
# Each function polls the emulator's runtime API under its own name.
for fn in ecr-vault-backup ecr-vault-restore ecr-vault-gc; do
  (
    set -a
    # shellcheck disable=SC1091
    source "$state/functions.env"
    set +a
    AWS_LAMBDA_RUNTIME_API="http://127.0.0.1:$port/.rt/$fn" AWS_LAMBDA_FUNCTION_NAME="$fn" \
      AWS_LAMBDA_FUNCTION_VERSION=1 AWS_LAMBDA_FUNCTION_MEMORY_SIZE=2048 \
      exec setsid "target/debug/$fn"
  ) > "$state/$fn.log" 2>&1 &
  pids+=($!)
done

# invoke FUNCTION EVENT JQ-CHECK: prints the response; the check must hold.
invoke() {
  local fn=$1 event=$2 check=$3 out
  printf '\n\033[1m== %s < events/%s\033[0m\n' "$fn" "$event"
  out="$(cargo lambda invoke --invoke-address 127.0.0.1 --invoke-port "$port" \
    --output-format json --data-file "events/$event" "$fn" 2>&1)" || true
  echo "$out"
  if ! jq -e "$check" >/dev/null 2>&1 <<<"$out"; then
    echo "invoke-local: $fn < events/$event: expected $check" >&2
    tail -n 40 "$state/emulator.log" "$state/$fn.log" >&2
    exit 1
  fi
}

invoke ecr-vault-backup schedule-scheduler.json '.trigger == "scheduled" and .complete and (.counts.imagesCopied > 0)'
invoke ecr-vault-backup schedule-eventbridge.json '.trigger == "scheduled" and .complete and .counts.imagesCopied == 0'
invoke ecr-vault-backup push.json '.trigger == "push" and (.skipped[0].error | test("no longer in ECR"))'
invoke ecr-vault-backup delete.json '.trigger == "delete" and (.auditKey | startswith("local/events/"))'
invoke ecr-vault-backup sqs-batch.json '.batchItemFailures == []'
invoke ecr-vault-restore restore-dry-run.json '.dryRun == true'
invoke ecr-vault-gc gc.json '.applied == false'
echo
echo "invoke-local: every function answered its sample events as expected"
