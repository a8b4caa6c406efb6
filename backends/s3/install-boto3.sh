#!/usr/bin/env bash
# Install boto3 (pinned) into a venv in the tools cache, for the interop test (a stock S3 client
# reads what tarvault wrote). Idempotent: skips when that version is already there.
# usage: install-boto3.sh        (prints the venv's python on the last line of stdout)
# env:   TARVAULT_TOOLS  cache root (default: $HOME/.cache/tarvault-tools)
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
VERSION=1.44.5
VENV=${TARVAULT_TOOLS:-$HOME/.cache/tarvault-tools}/boto3-$VERSION
PY=$VENV/bin/python
if [ -x "$PY" ] && "$PY" -c "import boto3, sys; sys.exit(boto3.__version__ != '$VERSION')" 2>/dev/null; then
  log "boto3 $VERSION already installed"
else
  rm -rf "$VENV"
  $TARVAULT_PYTHON -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "boto3==$VERSION" >&2
  log "boto3 $VERSION installed in $VENV"
fi
echo "$PY"
