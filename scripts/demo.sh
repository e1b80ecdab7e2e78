#!/usr/bin/env bash
# The disaster drill on the embedded local stack (a source registry, SeaweedFS S3 with Object
# Lock as the vault, moto for the ECR API, and an empty "fresh" registry), all on 127.0.0.1:
#   1. back up the source registry into the locked vault;
#   2. delete the images from the source registry;
#   3. restore them into the fresh registry;
#   4. compare every digest with skopeo (not with ecr-vault's own code).
# DEMO_TARGET=token restores into a registry with Docker token auth (60 s JWTs) instead, and
# DEMO_TARGET=s3 into one that keeps blobs on SeaweedFS and redirects blob GETs, like ECR.
# Everything it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
cargo build --quiet -p ecr-vault-cli -p ecr-vault-testkit
bin="$PWD/target/debug"

case "${DEMO_TARGET:-fresh}" in
  fresh) extra=(); target=ECR_VAULT_TEST_TARGET ;;
  token) extra=(--token-registry); target=ECR_VAULT_TEST_TOKEN_REGISTRY ;;
  s3) extra=(--s3-registry); target=ECR_VAULT_TEST_S3_REGISTRY ;;
  *) echo "DEMO_TARGET must be fresh, token or s3" >&2; exit 2 ;;
esac

state="$(mktemp -d)"
"$bin/ecr-vault-stack" up --dir "$state" --seed "${extra[@]}" > "$state/stack.log" 2>&1 &
stack_pid=$!
cleanup() { kill "$stack_pid" 2>/dev/null || true; wait "$stack_pid" 2>/dev/null || true; rm -rf "$state"; }
trap cleanup EXIT
# The stack writes its env file atomically once every server is ready (or exits on failure).
while [ ! -f "$state/env" ]; do
  kill -0 "$stack_pid" 2>/dev/null || { cat "$state/stack.log"; exit 1; }
  sleep 0.2
done
# shellcheck disable=SC1091
source "$state/env"
t_url_var="${target}_URL" t_host_var="${target}_HOST" t_user_var="${target}_USER" t_pw_var="${target}_PASSWORD"
T_URL="${!t_url_var}" T_HOST="${!t_host_var}" T_USER="${!t_user_var}" T_PASSWORD="${!t_pw_var}"
src=(--registry "$ECR_VAULT_TEST_REGISTRY_URL" --username "$ECR_VAULT_TEST_REGISTRY_USER" --password "$ECR_VAULT_TEST_REGISTRY_PASSWORD")
dst=(--registry "$T_URL" --username "$T_USER" --password "$T_PASSWORD")
vault="s3://$ECR_VAULT_TEST_BUCKET/demo"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
reg_curl() { curl -sf -u "$ECR_VAULT_TEST_REGISTRY_USER:$ECR_VAULT_TEST_REGISTRY_PASSWORD" "$@"; }

# Record what the source holds, as skopeo sees it: repo:tag → sha256 of the raw manifest.
declare -A before
for repo in $(reg_curl "$ECR_VAULT_TEST_REGISTRY_URL/v2/_catalog" | jq -r '.repositories[]'); do
  for tag in $(reg_curl "$ECR_VAULT_TEST_REGISTRY_URL/v2/$repo/tags/list" | jq -r '.tags[]?'); do
    before["$repo:$tag"]="sha256:$(skopeo inspect --raw --tls-verify=false \
      --creds "$ECR_VAULT_TEST_REGISTRY_USER:$ECR_VAULT_TEST_REGISTRY_PASSWORD" \
      "docker://$ECR_VAULT_TEST_REGISTRY_HOST/$repo:$tag" | sha256sum | cut -d' ' -f1)"
  done
done

step "1. back up the source registry into the Object Lock vault ($vault)"
"$bin/ecr-vault" backup "${src[@]}" --vault "$vault" --retention-days 1 --lock-slack-days 1
"$bin/ecr-vault" snapshots --vault "$vault"

step "2. disaster: delete every image from the source registry"
for ref in "${!before[@]}"; do
  repo="${ref%%:*}"
  reg_curl -X DELETE "$ECR_VAULT_TEST_REGISTRY_URL/v2/$repo/manifests/${before[$ref]}" -o /dev/null || true
  echo "deleted $ref"
done

step "3. restore the latest snapshot into a fresh registry ($T_URL, ${DEMO_TARGET:-fresh})"
"$bin/ecr-vault" restore "${dst[@]}" --vault "$vault" --snapshot latest --dry-run
"$bin/ecr-vault" restore "${dst[@]}" --vault "$vault" --snapshot latest
"$bin/ecr-vault" verify --vault "$vault" --deep

step "4. compare digests with skopeo"
fail=0
for ref in "${!before[@]}"; do
  got="sha256:$(skopeo inspect --raw --tls-verify=false \
    --creds "$T_USER:$T_PASSWORD" \
    "docker://$T_HOST/$ref" | sha256sum | cut -d' ' -f1)"
  if [ "$got" = "${before[$ref]}" ]; then echo "ok   $ref ${before[$ref]}"; else echo "DIFF $ref ${before[$ref]} != $got"; fail=1; fi
done
[ "$fail" = 0 ] && echo "drill passed: every image is back, byte for byte" || { echo "drill FAILED"; exit 1; }
