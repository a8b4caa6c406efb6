#!/usr/bin/env bash
# Install the s3s-fs S3 server (pinned) into a tools cache. Idempotent: skips when present.
# usage: install-s3s.sh            (prints the binary path on the last line of stdout)
# env:   TARVAULT_TOOLS  cache root (default: $HOME/.cache/tarvault-tools)
set -euo pipefail
VERSION=0.14.1
CACHE=${TARVAULT_TOOLS:-$HOME/.cache/tarvault-tools}
BIN=$CACHE/bin/s3s-fs
# cargo install records what it installed in $ROOT/.crates.toml; use it as the version stamp.
installed() {
  [ -x "$BIN" ] && grep -q "^\"s3s-fs $VERSION " "$CACHE/.crates.toml" 2>/dev/null
}
if installed; then
  echo "s3s-fs $VERSION already installed" >&2
else
  command -v cargo >/dev/null || { echo "install-s3s.sh: cargo not found" >&2; exit 1; }
  mkdir -p "$CACHE"
  echo "installing s3s-fs $VERSION into $CACHE (takes ~6-11 min cold)" >&2
  start=$(date +%s)
  # --locked: use the crate's Cargo.lock (newer deps need a newer rustc).
  cargo install s3s-fs@"$VERSION" --locked --features binary --root "$CACHE" >&2
  echo "s3s-fs installed in $(( $(date +%s) - start )) s" >&2
  installed || { echo "install-s3s.sh: install finished but $BIN is missing" >&2; exit 1; }
fi
echo "$BIN"
