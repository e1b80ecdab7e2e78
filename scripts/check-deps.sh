#!/usr/bin/env bash
# One HTTP stack, one TLS stack, one of each hash crate (issue 16, decision 0011): fails when
# `cargo tree -d` lists a second version of any crate named below. The AWS SDK's default
# features would bring hyper 0.14, rustls 0.21 and ring back beside reqwest's hyper 1 and
# rustls 0.23; a dependency bump can do the same quietly. Runs offline against Cargo.lock.
set -euo pipefail
cd "$(dirname "$0")/.."

# HTTP, TLS and hashing crates that must each appear in one version only. sha1 and its
# digest 0.10 are not listed: aws-config's SSO credential provider (which the CLI keeps for
# `aws sso login` profiles) pins sha1 0.10 while the SDK's checksums use 0.11.
single=(hyper hyper-util h2 http http-body http-body-util tower reqwest
        rustls rustls-webpki tokio-rustls hyper-rustls rustls-native-certs ring aws-lc-rs aws-lc-sys
        sha2 md-5 crc-fast crc32fast)

dups="$(cargo tree --workspace --duplicates --locked --offline --edges normal,build \
          --depth 0 --format "{p}" --prefix none | awk '/^[A-Za-z0-9_-]+ v/ {print $1, $2}' | sort -u)"
failed=0
for name in "${single[@]}"; do
  versions="$(awk -v n="$name" '$1 == n {print $2}' <<<"$dups" | tr '\n' ' ')"
  if [ -n "$versions" ]; then
    echo "check-deps: more than one $name in the tree: $versions(see: cargo tree -i $name)" >&2
    failed=1
  fi
done
if [ "$failed" = 0 ]; then
  echo "check-deps: one version each of: ${single[*]}"
fi
exit "$failed"
