#!/usr/bin/env bash
# The 100,000-image benchmark (issue 17): seeds 2,000 repositories x 50 images straight into a
# docker-registry filesystem root, then measures the inline CLI first backup, a no-change
# rerun, `plan`, the snapshot document and the fan-out path (scheduled invocation + workers on
# moto's SQS), one run each with the load average recorded, and writes the "100,000 images"
# section of docs/benchmarks.md. See bench/scale.py for what each figure means.
#
#   bash scripts/bench-scale.sh                          # full: ~1 hour on 2 cores
#   bash scripts/bench-scale.sh --repos 400 --per-repo 50  # a 20,000-image slice
#   options (passed to bench/scale.py): --repos N --per-repo N --workers N --batch N
#     --fanout-budget-s S (default 1800; the fan-out stops there and is reported unfinished)
#     --no-fanout --json FILE --md FILE
#
# Not run by CI. Disk: the fixture is ~5 GiB at full size (one 4 KiB block per file and
# directory) plus SeaweedFS's copy; the script wants 12 GiB free under $TMPDIR (default /tmp)
# and deletes everything at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in skopeo docker-registry /usr/bin/time .venv/bin/python .venv/bin/aws .venv/bin/weed; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "$tool" ] || {
    echo "bench-scale: $tool not found; run: bash scripts/setup.sh" >&2; exit 1; }
done

# SCALE_NO_BUILD=1 uses the binaries already in target/release as they are.
if [ -z "${SCALE_NO_BUILD:-}" ]; then
echo "bench-scale: building release binaries" >&2
# Two invocations: built together, the tests crate's features would unify into the CLI's
# dependencies and rebuild them.
cargo build --release --quiet --locked -p ecr-vault-cli -p ecr-vault-testkit
cargo build --release --quiet --locked -p ecr-vault-tests --bin ecr-vault-fanout-bench
fi
bin="$PWD/target/release"

work="$(mktemp -d "${TMPDIR:-/tmp}/ecr-vault-scale.XXXXXX")"
need_gib=12
avail_gib=$(( $(df -Pk "$work" | awk 'NR==2 {print $4}') / 1048576 ))
if [ "$avail_gib" -lt "$need_gib" ]; then
  echo "bench-scale: only ${avail_gib} GiB free under $work; this run needs ~${need_gib} GiB" >&2
  rmdir "$work"; exit 1
fi
"$bin/ecr-vault-stack" up --dir "$work/stack" > "$work/stack.log" 2>&1 &
stack_pid=$!
cleanup() {
  kill "$stack_pid" 2>/dev/null || true
  wait "$stack_pid" 2>/dev/null || true
  [ -n "${SCALE_KEEP_WORK:-}" ] || rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
deadline=$((SECONDS + 180))
while [ ! -f "$work/stack/env" ]; do
  kill -0 "$stack_pid" 2>/dev/null || { echo "bench-scale: stack failed:" >&2; cat "$work/stack.log" >&2; exit 1; }
  [ "$SECONDS" -lt "$deadline" ] || { echo "bench-scale: stack not ready after 180 s" >&2; exit 1; }
  sleep 0.2
done
# shellcheck disable=SC1091
source "$work/stack/env"
export PATH="$PWD/.venv/bin:$PATH"
.venv/bin/python bench/scale.py --work "$work" --bin-dir "$bin" "$@"
