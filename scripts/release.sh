#!/usr/bin/env bash
# Builds the `ecr-vault` CLI as static musl binaries for x86_64 and aarch64 Linux, with SHA-256
# sums, into dist/:
#   dist/ecr-vault-<version>-<arch>-linux-musl   and   dist/SHA256SUMS
# Cross-compiles with cargo-lambda's bundled Zig as C compiler and linker (setup.sh installs it),
# so aarch64 builds on an x86_64 host without a cross toolchain. Needs the two Rust targets:
#   rustup target add x86_64-unknown-linux-musl aarch64-unknown-linux-musl
# Check a download with: sha256sum -c SHA256SUMS --ignore-missing
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh >/dev/null
export PATH="$PWD/.venv/bin:$PATH"
version="$(cargo metadata --no-deps --format-version 1 \
  | jq -r '.packages[] | select(.name == "ecr-vault-cli") | .version')"
mkdir -p dist
rm -f dist/SHA256SUMS
for arch in x86_64 aarch64; do
  target="$arch-unknown-linux-musl"
  rustup target list --installed | grep -qx "$target" || {
    echo "release: missing Rust target $target (rustup target add $target)" >&2
    exit 1
  }
  cargo lambda build --release --locked --compiler cargo-zigbuild --target "$target" \
    -p ecr-vault-cli --bin ecr-vault --lambda-dir "target/release-dist/$arch"
  out="dist/ecr-vault-$version-$arch-linux-musl"
  # cargo-lambda names every binary it builds `bootstrap`, one folder per binary.
  cp "target/release-dist/$arch/ecr-vault/bootstrap" "$out"
  # Static: no program interpreter and no shared libraries (readelf comes with binutils).
  if readelf -ld "$out" | grep -qE "program interpreter|\(NEEDED\)"; then
    echo "release: $out is not static" >&2
    exit 1
  fi
  (cd dist && sha256sum "$(basename "$out")" >> SHA256SUMS)
done
cat dist/SHA256SUMS
