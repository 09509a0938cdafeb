#!/bin/sh
# vs-imr.sh: put the same load through im_service's imr and through imstream,
# in one run, on this machine.
#
#   scripts/vs-imr.sh /path/to/im_service [bench flags...]
#
# It builds imr from the im_service checkout (`go build ./imr`) into a
# temporary directory (nothing of im_service enters this repository), then
# runs `imstream bench --scenarios gateway,burst --imr-bin <it>` with any
# further flags, e.g. --events 200000 or --json out.json.
set -eu
if [ $# -lt 1 ] || [ ! -d "$1/imr" ]; then
	echo "usage: $0 /path/to/im_service-checkout [imstream bench flags...]" >&2
	echo "  (the directory must hold im_service's imr/; get it from github.com/GoBelieveIO/im_service)" >&2
	exit 2
fi
src=$1
shift
repo=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "building imr from $src"
(cd "$src" && go build -o "$tmp/imr" ./imr)
echo "building imstream"
(cd "$repo" && go build -o "$tmp/imstream" ./cmd/imstream)
cd "$tmp"
exec_args="--scenarios gateway,burst --imr-bin $tmp/imr"
# shellcheck disable=SC2086
"$tmp/imstream" bench $exec_args "$@"
