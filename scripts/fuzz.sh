#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a fixed number of executions and prints the
# execution counts and durations. Benchmark-style: not part of CI (scripts/test.sh).
#
#   scripts/fuzz.sh [RUNS_PER_TARGET]        default 2000000 (5 targets: 10 million in total)
#   FUZZ_TARGETS="manifest digest" scripts/fuzz.sh 100000
#
# Only a stable toolchain is installed, and cargo-fuzz needs `-Z` flags (sanitizer coverage),
# so RUSTC_BOOTSTRAP=1 is set. The sanitizer is off (`-s none`): the workspace forbids unsafe
# code, so AddressSanitizer would find nothing Rust's own checks do not, at half the speed;
# debug assertions and overflow checks stay on (cargo-fuzz's default). A crash stops the
# script with the input saved under fuzz/artifacts/<target>/; keep it as a unit test.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

CARGO_FUZZ_VERSION=0.13.1
if ! cargo fuzz --version 2>/dev/null | grep -qF "$CARGO_FUZZ_VERSION"; then
  cargo install --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi
export RUSTC_BOOTSTRAP=1

RUNS=${1:-2000000}
read -r -a TARGETS <<<"${FUZZ_TARGETS:-reference digest manifest backup_event restore_request}"

cargo fuzz build -s none

total=0
printf '%-16s %12s %10s %12s\n' target executions seconds exec/s
for t in "${TARGETS[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  log=$(mktemp)
  start=$(date +%s.%N)
  if ! cargo fuzz run -s none "$t" "corpus/$t" "seeds/$t" -- \
      -runs="$RUNS" -print_final_stats=1 >"$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz: target $t FAILED (input under fuzz/artifacts/$t/)" >&2
    exit 1
  fi
  end=$(date +%s.%N)
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
  printf '%-16s %12s %10s %12.0f\n' "$t" "$execs" "$secs" "$(awk -v e="$execs" -v s="$secs" 'BEGIN { print e / s }')"
  total=$((total + execs))
  rm -f "$log"
done
echo "total executions: $total, no crash"
