#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (default 60 s each); any crash fails.
# cargo-fuzz needs nightly features; RUSTC_BOOTSTRAP=1 enables them on the stable toolchain.
# The inspector target is seeded with the smallest real tarballs of the corpus, publish and serve
# with the files under seeds/.
set -euo pipefail
SECS=${1:-60}
HERE=$(cd "$(dirname "$0")" && pwd)
TOOLS=${TARVAULT_TOOLS:-$HOME/.cache/tarvault-tools}
CORPUS=${TARVAULT_CORPUS:-$HERE/../../shared/corpus}
export PATH="$TOOLS/bin:$PATH"
if ! cargo fuzz --version 2>/dev/null | grep -q "0.13.2"; then
  cargo install cargo-fuzz --version 0.13.2 --locked --root "$TOOLS"
fi
export RUSTC_BOOTSTRAP=1
cd "$HERE"
mkdir -p corpus/integrity corpus/inspect corpus/publish corpus/serve
# Hand-made seeds: a publish document as npm 11 sends it, requests with ranges and conditions.
for target in publish serve; do
  cp -n seeds/$target/* corpus/$target/
done
if [ -d "$CORPUS/tarballs" ]; then
  find "$CORPUS/tarballs" -name '*.tgz' -size -64k -exec cp -n {} corpus/inspect/ \;
fi
printf 'sha512-XI5MPzVNApjAyhQzphX8BkmKsKUxD4LdyK24iZeQGinBN9yTQT3bFlCBy/aVx2HrNcqQGsdot8ghrjyrvMCoEA==?x sha1-qvTGHdzF6KLavt4PO0gs2a6pQ00=' > corpus/integrity/seed
for target in integrity inspect publish serve; do
  echo "fuzzing $target for ${SECS}s"
  cargo fuzz run "$target" "corpus/$target" -- \
    -max_total_time="$SECS" -max_len=131072 -rss_limit_mb=2048 -timeout=10 -print_final_stats=1
done
