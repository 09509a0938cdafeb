#!/usr/bin/env bash
# Makes sure the tools the tests need are installed: redis-server (real
# Redis for integration tests). As root with apt-get it installs what is
# missing; otherwise it says what to install and fails (or only warns with
# --soft, as `make run` does: dev falls back to an in-process Redis).
set -euo pipefail
soft=0
[ "${1:-}" = "--soft" ] && soft=1
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "ensure-tools: installing ${missing[*]} with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1; then
    apt-get update -qq >/dev/null 2>&1 || true
    apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  # the Debian package starts a system redis; tests start their own
  (service redis-server stop || true) >/dev/null 2>&1
  command -v redis-server >/dev/null 2>&1 && exit 0
fi
msg="ensure-tools: missing ${missing[*]}. Install it (Debian/Ubuntu: sudo apt-get install redis-server; macOS: brew install redis) and run again."
if [ $soft = 1 ]; then
  echo "$msg (continuing: imstream dev falls back to an in-process Redis)" >&2
  exit 0
fi
echo "$msg" >&2
exit 1
