#!/usr/bin/env bash
# The test suite: installs what the tests need (idempotent), then runs the checks CI holds
# every submission to. Every server the tests use runs on 127.0.0.1, started by the harness.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"

echo "== format"
cargo fmt --all -- --check
echo "== templates"
bash scripts/check-templates.sh
echo "== dependencies (one HTTP/TLS stack, one of each hash crate)"
bash scripts/check-deps.sh
echo "== clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== docs (intra-doc links resolve)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --quiet
echo "== tests"
# SeaweedFS turns read-only below 1 % free disk (500 on every write), so say how much room the
# build left for the servers' data.
df -h . "${TMPDIR:-/tmp}" | uniq
# Test binaries run one after another; inside each, two test threads (the machine has two
# cores and each binary shares one local stack between its tests).
cargo test --workspace --locked -- --test-threads=2
echo "== local function runs (events/ through cargo-lambda's emulator)"
bash scripts/invoke-local.sh
