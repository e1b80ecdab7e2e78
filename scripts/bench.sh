#!/usr/bin/env bash
# Backup benchmark: ecr-vault vs the two-hop path (skopeo dir: + aws s3 cp) vs the raw limit,
# peak RSS and local-disk writes of the CLI, a no-change rerun, and restore when available.
# Everything runs on 127.0.0.1 against the stack from `ecr-vault-stack up`, which this script
# starts and stops. Writes docs/benchmarks.md and docs/benchmarks.png.
#
#   bash scripts/bench.sh                 # full: 2x256 MiB, 256 MiB, 1 GiB, 2 GiB; 3 repetitions,
#                                         # then the CPU profile section (~20 min in all)
#   bash scripts/bench.sh --quick         # smoke: 256 MiB layers only, 1 repetition
#   bash scripts/bench.sh --profile-only  # redo only the CPU profile section of the .md
#   bash scripts/bench.sh --rerun-only    # only the no-change rerun over 1,000 images (~3 min)
#   bash scripts/bench.sh --bootstrap-only  # only the functions' bootstrap size and init time
#                                         # (bench/bootstrap.py; builds the lambda-release profile)
#   options: --reps N, --no-profile, --json FILE (dump every measurement), --md FILE, --png FILE
#
# The CPU profile uses `perf` (Debian package linux-perf) when it works on the machine, and
# is skipped otherwise.
#
# Needs `bash scripts/setup.sh` first (Debian skopeo/docker-registry/curl, the venv with weed,
# aws CLI v1 and matplotlib). Disk: ~4 GiB of images in the registry, SeaweedFS's copies (deleted
# ones too, until it vacuums them) and the two-hop path's files, under $TMPDIR (default /tmp):
# the script wants 26 GiB free (6 for --quick); all removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in skopeo curl docker-registry .venv/bin/python .venv/bin/aws .venv/bin/weed; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "$tool" ] || {
    echo "bench: $tool not found; run: bash scripts/setup.sh" >&2; exit 1; }
done
.venv/bin/python -c 'import matplotlib' 2>/dev/null || {
  echo "bench: matplotlib missing in .venv; run: bash scripts/setup.sh" >&2; exit 1; }

# The function bootstraps need no stack: size and init against a Runtime API stub.
case " $* " in
  *" --bootstrap-only "*) exec .venv/bin/python bench/bootstrap.py ;;
esac

# ECR_VAULT_BENCH_BIN: a directory of prebuilt binaries (ecr-vault, ecr-vault-bench,
# ecr-vault-stack) to measure instead, e.g. to compare build profiles in one sitting.
if [ -n "${ECR_VAULT_BENCH_BIN:-}" ]; then
  bin="$ECR_VAULT_BENCH_BIN"
else
  echo "bench: building release binaries" >&2
  cargo build --release --quiet -p ecr-vault-cli -p ecr-vault-testkit
  bin="$PWD/target/release"
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/ecr-vault-bench.XXXXXX")"
# Deleted objects hold their disk until SeaweedFS vacuums them, so a full run peaks near
# 20 GiB on top of the images. Below 1 % free SeaweedFS makes every volume read-only and the
# run dies mid-way on 500 InternalError (seen with 23 GiB free): refuse to start instead.
need_gib=26
case " $* " in *" --quick "*|*" --rerun-only "*|*" --profile-only "*) need_gib=6 ;; esac
avail_gib=$(( $(df -Pk "$work" | awk 'NR==2 {print $4}') / 1048576 ))
if [ "$avail_gib" -lt "$need_gib" ]; then
  echo "bench: only ${avail_gib} GiB free under $work; this run needs ~${need_gib} GiB" >&2
  rmdir "$work"; exit 1
fi
"$bin/ecr-vault-stack" up --dir "$work/stack" > "$work/stack.log" 2>&1 &
stack_pid=$!
cleanup() {
  kill "$stack_pid" 2>/dev/null || true
  wait "$stack_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
deadline=$((SECONDS + 180))
while [ ! -f "$work/stack/env" ]; do
  kill -0 "$stack_pid" 2>/dev/null || { echo "bench: stack failed:" >&2; cat "$work/stack.log" >&2; exit 1; }
  [ "$SECONDS" -lt "$deadline" ] || { echo "bench: stack not ready after 180 s" >&2; cat "$work/stack.log" >&2; exit 1; }
  sleep 0.2
done
# shellcheck disable=SC1091
source "$work/stack/env"

# The no-change rerun over 1,000 small images (bench/rerun.py) writes only its own section of
# docs/benchmarks.md; it runs alone with --rerun-only, and after the full benchmark.
case " $* " in
  *" --rerun-only "*) .venv/bin/python bench/rerun.py --bin-dir "$bin" "$@"; exit 0 ;;
esac
.venv/bin/python bench/bench.py --work "$work" --bin-dir "$bin" "$@"
case " $* " in
  *" --quick "*|*" --profile-only "*) ;;
  *) .venv/bin/python bench/rerun.py --bin-dir "$bin"
     .venv/bin/python bench/bootstrap.py ;;
esac
