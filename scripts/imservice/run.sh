#!/usr/bin/env bash
# imservice/run.sh: im_service, unmodified, routed once by its own imr and
# once by imstream (gateway + roles), with its own tests and a cross-server
# suite; the push lists of both runs compared entry for entry.
#
#   scripts/imservice/run.sh /path/to/im_service [--gateways N] [--runs K] [--restart]
#
# What it does, all under one temporary directory (nothing of im_service
# enters this repository):
#   - copies the checkout and builds im, ims and imr from it (ims gets a
#     file with a blank import of package server, without which it
#     registers no message body types), and builds imstream;
#   - starts MariaDB (Debian's mariadb-server, by hand in a temp datadir)
#     with im_service's db.sql and the test groups;
#   - per router (imr, then imstream): a fresh Redis, ims, two im servers
#     on this host (ports 23000 and 24000, as im_service's tests expect),
#     N routers in their route_addrs (N imr; or N imstream gateways beside
#     `imstream dev`'s broker and roles); then im_service's own tests/
#     (every Test* of test_peer, test_room, test_group, test_customer but
#     test_peer's TestTimeout, which waits 6 minutes for the idle timeout)
#     and scripts/imservice/suite.py's cross-server suite; the push lists
#     are kept;
#   - with --restart, the last router (imr, or gateway) is stopped and
#     started again on its address between the two (the IM servers
#     reconnect and replay their subscriptions, as after any router
#     restart) — with --gateways 2, a restart of one of two;
#   - prints a table and exits non-zero when a test that passed with imr
#     failed with imstream, or the push lists differ.
# Needs: go, redis-server, mariadb-server, /usr/bin/python3 with redis and
# requests (Debian: python3-redis python3-requests); as root with apt-get it
# installs what is missing.
set -euo pipefail
if [ $# -lt 1 ] || [ ! -f "$1/imr/main.go" ]; then
	echo "usage: $0 /path/to/im_service [--gateways N] [--runs K]" >&2
	echo "  (a checkout of github.com/GoBelieveIO/im_service)" >&2
	exit 2
fi
src=$(cd "$1" && pwd)
shift
gateways=1
runs=1
restart=0
while [ $# -gt 0 ]; do
	case $1 in
	--gateways) gateways=$2; shift 2 ;;
	--runs) runs=$2; shift 2 ;;
	--restart) restart=1; shift ;;
	*) echo "unknown flag $1" >&2; exit 2 ;;
	esac
done
repo=$(cd "$(dirname "$0")/../.." && pwd)
py=/usr/bin/python3

need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v mariadbd >/dev/null || command -v mysqld >/dev/null || need+=(mariadb-server)
$py -c 'import redis, requests' 2>/dev/null || need+=(python3-redis python3-requests)
if [ ${#need[@]} -gt 0 ]; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
		echo "installing ${need[*]}"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
		(service mariadb stop || true) >/dev/null 2>&1
		(service redis-server stop || true) >/dev/null 2>&1
	else
		echo "missing: ${need[*]} (Debian/Ubuntu: apt-get install ${need[*]})" >&2
		exit 2
	fi
fi

tmp=$(mktemp -d /tmp/imstream-imservice.XXXXXX)
pids=()
stop_all() {
	for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]:-}"; do [ -n "$p" ] && wait "$p" 2>/dev/null || true; done
	pids=()
}
cleanup() {
	stop_all
	[ -n "${mysql_pid:-}" ] && kill "$mysql_pid" 2>/dev/null && wait "$mysql_pid" 2>/dev/null
	if [ -z "${KEEP:-}" ]; then rm -rf "$tmp"; else echo "kept $tmp"; fi
}
trap cleanup EXIT

free_port() { $py -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { # host:port, what
	for _ in $(seq 1 300); do
		if $py -c "import socket,sys; socket.create_connection(('${1%:*}', ${1##*:}), 1)" 2>/dev/null; then return 0; fi
		sleep 0.1
	done
	echo "timed out waiting for $2 on $1" >&2
	return 1
}

echo "== building im, ims, imr from $src and imstream, in $tmp"
mkdir -p "$tmp/src" "$tmp/bin"
(cd "$src" && tar --exclude=.git -cf - .) | (cd "$tmp/src" && tar -xf -)
printf 'package main\n\nimport _ "github.com/GoBelieveIO/im_service/server"\n' >"$tmp/src/ims/imstream_harness_types.go"
(cd "$tmp/src" && go build -o "$tmp/bin/im" ./im && go build -o "$tmp/bin/ims" ./ims && go build -o "$tmp/bin/imr" ./imr)
(cd "$repo" && go build -o "$tmp/bin/imstream" ./cmd/imstream)

echo "== MariaDB"
myport=$(free_port)
mysqld=$(command -v mariadbd || command -v mysqld)
mysql_install_db --user="$(id -un)" --datadir="$tmp/mysql" --auth-root-authentication-method=normal >"$tmp/mysql-install.log" 2>&1
"$mysqld" --user="$(id -un)" --datadir="$tmp/mysql" --socket="$tmp/mysql.sock" --port="$myport" --bind-address=127.0.0.1 \
	--pid-file="$tmp/mysql.pid" --skip-log-bin >"$tmp/mysql.log" 2>&1 &
mysql_pid=$!
wait_port "127.0.0.1:$myport" MariaDB
my() { mysql --socket="$tmp/mysql.sock" -uroot "$@"; }
my <"$tmp/src/db.sql" >/dev/null
# im_service's test groups (tests/test_group.py) and the suite's
members="1 2 3 4 5 6 7 8 9 10"
sql="USE gobelieve;"
for g in "3110 0 $members" "3111 1 $members" "3112 0 101 102 103 104" "3113 1 101 102 103 104"; do
	set -- $g
	gid=$1 super=$2
	shift 2
	sql+="INSERT INTO \`group\` (id, appid, master, super, name, deleted) VALUES ($gid, 7, $1, $super, 'g$gid', 0);"
	for m in "$@"; do sql+="INSERT INTO group_member (group_id, uid, timestamp, deleted) VALUES ($gid, $m, 0, 0);"; done
done
my -e "$sql"
# the password of im.cfg.sample's data source (root:123456), over TCP from 127.0.0.1
my -e "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '123456'; GRANT ALL ON *.* TO 'root'@'127.0.0.1';
	ALTER USER 'root'@'localhost' IDENTIFIED BY '123456'; FLUSH PRIVILEGES;"

# one run: router ($1: imr or imstream) for round $2
run_once() {
	local router=$1 round=$2
	local dir="$tmp/run-$round-$router"
	mkdir -p "$dir/ims" "$dir/pending1" "$dir/pending2"
	local rport
	rport=$(free_port)
	local routes=() i
	for i in $(seq 0 $((gateways - 1))); do routes+=("127.0.0.1:$(free_port)"); done
	local last_cmd=() # how the last router runs, for --restart
	if [ "$router" = imr ]; then
		redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" >"$dir/redis.log" 2>&1 &
		pids+=($!)
		wait_port "127.0.0.1:$rport" redis
		for i in "${!routes[@]}"; do
			printf 'listen="%s"\n\n[redis]\naddress="127.0.0.1:%s"\npassword=""\ndb=0\n\n[log]\nlevel="warn"\n' "${routes[$i]}" "$rport" >"$dir/imr$i.cfg"
			last_cmd=("$tmp/bin/imr" "$dir/imr$i.cfg")
			"${last_cmd[@]}" >>"$dir/imr$i.log" 2>&1 &
			pids+=($!)
		done
	else
		local kport admin
		kport=$(free_port)
		admin=$(free_port)
		local gwflags=(--gateway.routers "$gateways" --gateway.router_index)
		# dev runs the broker, Redis, the roles and router 0
		"$tmp/bin/imstream" dev --rate 0 --kafka-port "$kport" --redis-port "$rport" --gateway.listen "${routes[0]}" \
			--admin.listen "127.0.0.1:$admin" --presence.lease 10s --log.level warn "${gwflags[@]}" 0 >"$dir/imstream-dev.log" 2>&1 &
		pids+=($!)
		wait_port "127.0.0.1:$rport" "imstream dev's redis"
		wait_port "127.0.0.1:$kport" "imstream dev's kafka"
		for i in $(seq 1 $((gateways - 1))); do
			last_cmd=("$tmp/bin/imstream" gateway --kafka.brokers "127.0.0.1:$kport" --redis.addrs "127.0.0.1:$rport" --gateway.listen "${routes[$i]}"
				--admin.listen "127.0.0.1:$(free_port)" --presence.lease 10s --log.level warn "${gwflags[@]}" "$i")
			"${last_cmd[@]}" >>"$dir/gateway$i.log" 2>&1 &
			pids+=($!)
		done
	fi
	for r in "${routes[@]}"; do wait_port "$r" "$router"; done
	local route_list
	route_list=$(printf '"%s",' "${routes[@]}")
	route_list="[${route_list%,}]"
	printf 'rpc_listen="127.0.0.1:13333"\nstorage_root="%s/ims"\nsync_listen="127.0.0.1:%s"\nkefu_appid=1453\n' "$dir" "$(free_port)" >"$dir/ims.cfg"
	"$tmp/bin/ims" "$dir/ims.cfg" >"$dir/ims.log" 2>&1 &
	pids+=($!)
	wait_port 127.0.0.1:13333 ims
	local n port http rpcp ws
	for n in 1 2; do
		if [ $n = 1 ]; then port=23000 http=6666; else port=24000 http=6667; fi
		rpcp=$(free_port)
		ws=$(free_port)
		cat >"$dir/im$n.cfg" <<EOF
port=$port
storage_rpc_addrs=["127.0.0.1:13333"]
route_addrs=$route_list
ws_address="127.0.0.1:$ws"
http_listen_address="127.0.0.1:$http"
rpc_listen_address="127.0.0.1:$rpcp"
mysqldb_datasource="root:123456@tcp(127.0.0.1:$myport)/gobelieve"
pending_root="$dir/pending$n"
kefu_appid=1453
group_deliver_count=4

[redis]
address="127.0.0.1:$rport"
password=""
db=0

[log]
filename="$dir/im$n.log"
level="info"
EOF
		"$tmp/bin/im" "$dir/im$n.cfg" >"$dir/im$n.out" 2>&1 &
		pids+=($!)
		wait_port "127.0.0.1:$port" "im $n"
	done
	sleep 2 # the im servers connect to their routers
	mkdir -p "$dir/tests"
	cp "$tmp/src/tests/"*.py "$dir/tests/"
	sed -i "s/^REDIS_PORT = .*/REDIS_PORT = $rport/" "$dir/tests/config.py"
	echo "-- $router, round $round: im_service's tests"
	(cd "$dir/tests" && $py "$repo/scripts/imservice/suite.py" own --out "$dir/own.json") || true
	if [ $restart = 1 ]; then
		local victim=${pids[$((${#pids[@]} - 4))]} # the last router: started before ims and the two im servers
		if [ ${#last_cmd[@]} -eq 0 ]; then
			echo "--restart: nothing to restart (dev's gateway is the only one; use --gateways 2)" >&2
		else
			echo "-- $router, round $round: restarting router ${last_cmd[*]: -1}"
			kill -TERM "$victim"
			wait "$victim" 2>/dev/null || true
			"${last_cmd[@]}" >>"$dir/restarted.log" 2>&1 &
			pids+=($!)
			wait_port "${routes[-1]}" "$router again"
			sleep 5 # the IM servers reconnect (im_service retries every few seconds) and replay
		fi
	fi
	echo "-- $router, round $round: the cross-server suite"
	(cd "$dir/tests" && $py "$repo/scripts/imservice/suite.py" cross --redis-port "$rport" --routers "$gateways" --out "$dir/cross.json") || true
	stop_all
}

for round in $(seq 1 "$runs"); do
	run_once imr "$round"
	run_once imstream "$round"
done
$py "$repo/scripts/imservice/suite.py" compare "$tmp"/run-*
