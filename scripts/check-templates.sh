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

mapfile -t dockerfiles < <(find functions -name Dockerfile -o -name '*.Dockerfile' | sort)
if [ -x "$VENV/hadolint" ]; then
  run "hadolint" "$VENV/hadolint" --failure-threshold style "${dockerfiles[@]}"
else
  echo "== hadolint: not installed ($VENV/hadolint); run scripts/setup.sh" >&2
  failed=1
fi

if [ "$failed" -ne 0 ]; then
  echo "check-templates: FAILED" >&2
  exit 1
fi
echo "check-templates: all checks passed"
