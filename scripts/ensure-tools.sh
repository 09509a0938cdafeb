#!/usr/bin/env bash
# Makes sure the tools the tests need are installed:
#   redis-server  real Redis for the integration tests      (Debian: redis-server)
#   promtool      rule tests and metrics lint; prometheus  (Debian: prometheus)
#   confluent_kafka  the Python example's e2e test (librdkafka) (Debian: python3-confluent-kafka)
#   kubeconform   offline Kubernetes manifest validation    (go install)
# As root with apt-get it installs what is missing; otherwise it says what to
# install and fails (or, with --soft as `make run` uses, only warns: dev falls
# back to an in-process Redis).
set -euo pipefail
soft=0
[ "${1:-}" = "--soft" ] && soft=1
apt_missing=()
command -v redis-server >/dev/null 2>&1 || apt_missing+=(redis-server)
# Debian's package is for the system python3 (/usr/bin/python3), which may
# not be the first python3 on PATH (pyenv, venvs).
has_pyck() { for py in /usr/bin/python3 python3; do "$py" -c 'import confluent_kafka' >/dev/null 2>&1 && return 0; done; return 1; }
if [ $soft = 0 ]; then
  command -v promtool >/dev/null 2>&1 || apt_missing+=(prometheus)
  has_pyck || apt_missing+=(python3-confluent-kafka)
fi
if [ ${#apt_missing[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "ensure-tools: installing ${apt_missing[*]} with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -qq "${apt_missing[@]}" >/dev/null 2>&1; then
    apt-get update -qq >/dev/null 2>&1 || true
    apt-get install -y -qq "${apt_missing[@]}" >/dev/null
  fi
  # the Debian packages start system services; tests start their own
  for s in redis-server prometheus prometheus-node-exporter; do (service "$s" stop || true) >/dev/null 2>&1; done
  apt_missing=()
  command -v redis-server >/dev/null 2>&1 || apt_missing+=(redis-server)
  [ $soft = 1 ] || command -v promtool >/dev/null 2>&1 || apt_missing+=(prometheus)
  [ $soft = 1 ] || has_pyck || apt_missing+=(python3-confluent-kafka)
fi
if [ $soft = 1 ]; then
  if [ ${#apt_missing[@]} -gt 0 ]; then
    echo "ensure-tools: missing ${apt_missing[*]} (Debian/Ubuntu: sudo apt-get install ${apt_missing[*]}; macOS: brew install redis); continuing: imstream dev falls back to an in-process Redis" >&2
  fi
  exit 0
fi
gobin="$(go env GOPATH)/bin"
if ! command -v kubeconform >/dev/null 2>&1 && [ ! -x "$gobin/kubeconform" ]; then
  echo "ensure-tools: installing kubeconform with go install" >&2
  go install github.com/yannh/kubeconform/cmd/kubeconform@v0.6.7
fi
if [ ${#apt_missing[@]} -gt 0 ]; then
  echo "ensure-tools: missing ${apt_missing[*]}. Install (Debian/Ubuntu: sudo apt-get install ${apt_missing[*]}; macOS: brew install redis prometheus librdkafka, pip install confluent-kafka) and run again." >&2
  exit 1
fi
