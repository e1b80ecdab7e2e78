#!/usr/bin/env bash
# Lints the deployment artefacts offline: the SAM template (sam validate --lint), every
# CloudFormation template (cfn-lint, warnings count as failures), the sample events (valid
# JSON) and the Lambda Dockerfile (hadolint). Uses the pinned tools in .venv (scripts/setup.sh installs them). Exits non-zero
# on the first class of failure it finds, after running every check.
set -uo pipefail
cd "$(dirname "$0")/.."

VENV=.venv/bin
for tool in sam cfn-lint; do
  if [ ! -x "$VENV/$tool" ]; then
    echo "check-templates: $VENV/$tool missing; run scripts/setup.sh" >&2
    exit 2
  fi
done

# sam validate needs a region and some credentials even though --lint stays local. Use inert
# values and keep every real profile, config file and endpoint out of reach.
export AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1
export AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE AWS_SECRET_ACCESS_KEY=offline-lint-only
unset AWS_SESSION_TOKEN AWS_PROFILE
export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
export AWS_EC2_METADATA_DISABLED=true
export SAM_CLI_TELEMETRY=0 SAM_CLI_DISABLE_TELEMETRY=1

failed=0
run() {
  local name=$1; shift
  echo "== $name: $*"
  if "$@"; then
    echo "   ok"
  else
    echo "   FAILED ($name)" >&2
    failed=1
  fi
}

run "sam validate" "$VENV/sam" validate --lint -t template.yaml
run "cfn-lint" "$VENV/cfn-lint" template.yaml templates/*.yaml

# The same checks with every option on, and with every option off: copies of template.yaml
# whose parameter defaults are set so (cfn-lint's --parameters is not applied through the SAM
# transform, so the defaults themselves are changed).
VARIANTS=$(mktemp -d)
trap 'rm -rf "$VARIANTS"' EXIT
variant() {
  local name=$1; shift
  "$VENV/python" - "$VARIANTS/$name.yaml" "$@" <<'PY'
import re, sys
out, pairs = sys.argv[1], sys.argv[2:]
text = open("template.yaml").read()
for pair in pairs:
    key, value = pair.split("=", 1)
    pattern = re.compile(rf"(\n  {key}:\n(?:    .*\n)*?    Default: ).*\n")
    text, n = pattern.subn(lambda m: m.group(1) + f'"{value}"\n', text, count=1)
    if n != 1:
        sys.exit(f"check-templates: no parameter {key} with a Default in template.yaml")
open(out, "w").write(text)
PY
}
KMS=arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab
REPLICA_KMS=arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab
if variant all-on CreateVaultBucket=true VaultBucketName=vault-example VaultKmsKeyArn=$KMS \
     MaintenancePrincipalArn=arn:aws:iam::111122223333:role/maintenance \
     EnableScheduledGc=true GcApply=true EnableRestoreDrill=true EnableAuditTrail=true \
     ReplicaBucketArn=arn:aws:s3:::vault-replica-example ReplicaKmsKeyArn=$REPLICA_KMS \
     AlarmEmail=ops@example.com PushRepositoryPrefix=team/ \
   && variant all-off CreateVaultBucket=false VaultBucketName=existing-vault \
     EnableSchedule=false EnablePushTrigger=false EnableDeleteAudit=false \
     EnableScheduledGc=false EnableRestoreDrill=false EnableAuditTrail=false \
     BackupReservedConcurrency=0 RestoreReservedConcurrency=0 GcReservedConcurrency=0; then
  for v in all-on all-off; do
    run "sam validate ($v)" "$VENV/sam" validate --lint -t "$VARIANTS/$v.yaml"
    run "cfn-lint ($v)" "$VENV/cfn-lint" "$VARIANTS/$v.yaml"
  done
else
  echo "   FAILED (option variants)" >&2
  failed=1
fi

# The sample events are documentation and test fixtures: they must at least be valid JSON.
check_events() {
  local f bad=0 n=0
  for f in events/*.json; do
    n=$((n + 1))
    "$VENV/python" -m json.tool "$f" >/dev/null || { echo "   invalid JSON: $f" >&2; bad=1; }
  done
  echo "   $n files"
  return "$bad"
}
run "events JSON" check_events

mapfile -t dockerfiles < <(find functions crates/cli -name Dockerfile -o -name '*.Dockerfile' | sort)
if [ -x "$VENV/hadolint" ]; then
  run "hadolint" "$VENV/hadolint" --failure-threshold style "${dockerfiles[@]}"
else
  echo "== hadolint: not installed ($VENV/hadolint); run scripts/setup.sh" >&2
  failed=1
fi

# The images sam build makes must contain the binaries CI builds and tests. The Dockerfile runs
# `cargo lambda build --profile lambda-release --locked -p $PACKAGE --bin $BIN` with the build
# args of each function in template.yaml; scripts/test.sh compiles those same package/bin
# targets with --locked (cargo test --workspace), and tests/functions_*.rs run them behind
# cargo-lambda's emulator. Here: every PACKAGE/BIN pair names a real bin target, and the Dockerfile's pinned
# toolchain and cargo-lambda match the workspace's rust-version and scripts/requirements.txt.
check_docker_build_args() {
  "$VENV/python" - <<'PY'
import json, re, subprocess, sys
template = open("template.yaml").read()
pairs = re.findall(r"DockerBuildArgs:\s*\n\s+PACKAGE:\s*(\S+)\s*\n\s+BIN:\s*(\S+)", template)
functions = len(re.findall(r"Type:\s*AWS::Serverless::Function", template))
bad = []
if len(pairs) != functions:
    bad.append(f"{functions} functions but {len(pairs)} PACKAGE/BIN build-arg pairs in template.yaml")
meta = json.loads(subprocess.run(
    ["cargo", "metadata", "--no-deps", "--format-version", "1", "--locked", "--offline"],
    check=True, capture_output=True, text=True).stdout)
bins = {(p["name"], t["name"]) for p in meta["packages"] for t in p["targets"] if "bin" in t["kind"]}
for package, binary in pairs:
    if (package, binary) not in bins:
        bad.append(f"template.yaml builds {package}/{binary}, which is not a bin target of the workspace")
dockerfile = open("functions/Dockerfile").read()
def arg(name):
    m = re.search(rf"^ARG {name}=(\S+)$", dockerfile, re.M)
    return m.group(1) if m else None
workspace_rust = re.search(r'^rust-version = "([^"]+)"', open("Cargo.toml").read(), re.M).group(1)
pinned_lambda = re.search(r"^cargo-lambda==(\S+)$", open("scripts/requirements.txt").read(), re.M).group(1)
if "cargo lambda build --profile lambda-release --locked" not in dockerfile:
    bad.append("functions/Dockerfile does not build with the workspace's lambda-release profile")
if not re.search(r'^\[profile\.lambda-release\]\ninherits = "release"\nlto = "fat"\ncodegen-units = 1\nstrip = "symbols"$',
                 open("Cargo.toml").read(), re.M):
    bad.append("Cargo.toml's [profile.lambda-release] is not fat LTO, one codegen unit, symbols stripped")
if arg("RUST_VERSION") != workspace_rust:
    bad.append(f"Dockerfile RUST_VERSION={arg('RUST_VERSION')}, workspace rust-version {workspace_rust}")
if arg("CARGO_LAMBDA_VERSION") != pinned_lambda:
    bad.append(f"Dockerfile CARGO_LAMBDA_VERSION={arg('CARGO_LAMBDA_VERSION')}, requirements.txt pins {pinned_lambda}")
hashed = re.search(r"^cargo-lambda==(\S+) ", open("functions/cargo-lambda-requirements.txt").read(), re.M)
if not hashed or hashed.group(1) != pinned_lambda:
    bad.append(f"functions/cargo-lambda-requirements.txt does not pin cargo-lambda=={pinned_lambda} with hashes")
for b in bad:
    print("   " + b, file=sys.stderr)
print(f"   {len(pairs)} images: " + ", ".join(f"{p}/{b}" for p, b in pairs))
sys.exit(1 if bad else 0)
PY
}
run "Dockerfile build args" check_docker_build_args

if [ "$failed" -ne 0 ]; then
  echo "check-templates: FAILED" >&2
  exit 1
fi
echo "check-templates: all checks passed"
