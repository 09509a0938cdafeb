#!/usr/bin/python3
"""The im_service harness's tests (scripts/imservice/run.sh runs them).

  suite.py own --out F           im_service's own tests/ (run from that
                                 directory): every Test* of test_peer,
                                 test_room, test_group and test_customer but
                                 TestTimeout, each in its own process with a
                                 time limit
  suite.py cross --redis-port P [--routers N] --out F
                                 the cross-server suite: sender on im server
                                 1 (port 23000), receiver on im server 2
                                 (24000) or offline; exact contents; the
                                 push-list entries each case appended
  suite.py compare DIR...        imr's runs against imstream's: tests and
                                 push lists; exit 1 on a difference

It uses im_service's own client code (tests/client.py, protocol.py, rpc.py)
from the directory it runs in.
"""
import json
import os
import re
import subprocess
import sys
import threading
import time

LISTS = ["push_queue", "group_push_queue", "customer_push_queue", "customer_push_queue_v2", "system_push_queue"]
SKIP = {"TestTimeout"}  # waits 6 minutes for the idle timeout
TEST_FILES = ["test_peer", "test_room", "test_group", "test_customer"]
APP = 7
KEFU = 1453


def own(out):
    results = {}
    for mod in TEST_FILES:
        if not os.path.exists(mod + ".py"):
            continue
        names = re.findall(r"^def (Test\w+)\(", open(mod + ".py").read(), re.M)
        for name in names:
            if name in SKIP:
                continue
            code = "import sys; sys.path.insert(0, '.'); import %s as m; m.%s()" % (mod, name)
            try:
                p = subprocess.run([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=30)
                ok = p.returncode == 0
                why = "" if ok else p.stderr.decode(errors="replace").strip().splitlines()[-1:]
            except subprocess.TimeoutExpired:
                ok, why = False, "timed out after 30 s"
            results["%s.%s" % (mod, name)] = {"ok": ok, "why": why}
            print("%-50s %s %s" % (mod + "." + name, "ok" if ok else "FAIL", why or ""), flush=True)
            time.sleep(1)
    json.dump(results, open(out, "w"), indent=1)


class Receiver:
    """A client connected to an im server that collects what it is sent,
    syncing as im_service's clients do."""

    def __init__(self, uid, port, appid=APP, room=None):
        import client
        from protocol import MSG_SYNC, MSG_ENTER_ROOM, send_message

        self.got = []
        self.sock, self.seq = client.connect_server(uid, port, appid)
        self.seq += 1
        send_message(MSG_SYNC, self.seq, 0, self.sock)
        if room:
            self.seq += 1
            send_message(MSG_ENTER_ROOM, self.seq, room, self.sock)
        self.sync_key = 0
        self.lock = threading.Lock()
        threading.Thread(target=self.loop, daemon=True).start()

    def loop(self):
        from protocol import (MSG_SYNC, MSG_SYNC_END, MSG_SYNC_KEY, MSG_SYNC_NOTIFY, MSG_SYNC_GROUP, MSG_SYNC_GROUP_NOTIFY,
                              MSG_SYNC_GROUP_END, MSG_GROUP_SYNC_KEY, MESSAGE_FLAG_PUSH, recv_message_, send_message)
        groups = {}
        while True:
            try:
                cmd, s, flag, msg = recv_message_(self.sock)
            except OSError:
                return
            if cmd == 0:
                return
            if cmd == MSG_SYNC_END and msg > self.sync_key:
                self.sync_key = msg
                self.seq += 1
                send_message(MSG_SYNC_KEY, self.seq, msg, self.sock)
            elif cmd == MSG_SYNC_NOTIFY and msg > self.sync_key:
                self.seq += 1
                send_message(MSG_SYNC, self.seq, self.sync_key, self.sock)
            elif cmd == MSG_SYNC_GROUP_NOTIFY:
                gid, key = msg
                if key > groups.get(gid, 0):
                    self.seq += 1
                    send_message(MSG_SYNC_GROUP, self.seq, (gid, groups.get(gid, 0)), self.sock)
            elif cmd == MSG_SYNC_GROUP_END:
                gid, key = msg
                if key > groups.get(gid, 0):
                    groups[gid] = key
                    self.seq += 1
                    send_message(MSG_GROUP_SYNC_KEY, self.seq, (gid, key), self.sock)
            with self.lock:
                self.got.append((cmd, content_of(msg), bool(flag & MESSAGE_FLAG_PUSH)))

    def has(self, cmd, content):
        return self.count(cmd, content) > 0

    def count(self, cmd, content, pushed=False):
        """Copies received: as the client's protocol delivers them (a sync,
        or a message without the PUSH flag), or with pushed those an IM
        server forwarded at once with the PUSH flag (a persistent message
        the router forwarded, before the sync)."""
        with self.lock:
            return self.got.count((cmd, content, pushed))


def content_of(msg):
    c = getattr(msg, "content", msg)
    if isinstance(c, bytes):
        return c.decode(errors="replace")
    return c if isinstance(c, str) else None


def sender(uid, port=23000, appid=APP):
    import client
    sock, seq = client.connect_server(uid, port, appid)
    return sock, seq


def send_and_ack(sock, seq, cmd, m):
    """Sends m and waits for its ACK (the im server stored it)."""
    from protocol import MSG_ACK, recv_message_, send_message
    seq += 1
    send_message(cmd, seq, m, sock)
    deadline = time.time() + 10
    sock.settimeout(10)
    while time.time() < deadline:
        c, _, _, msg = recv_message_(sock)
        if c == MSG_ACK and msg == seq:
            return seq
    raise Exception("no ACK for cmd %d" % cmd)


def cross(redis_port, routers, out):
    import redis
    import rpc
    from protocol import (IMMessage, RTMessage, CustomerMessageV2, MSG_IM, MSG_GROUP_IM, MSG_RT, MSG_ROOM_IM, MSG_NOTIFICATION,
                          MSG_SYSTEM, MSG_CUSTOMER_V2, MSG_ENTER_ROOM, send_message)

    rds = redis.StrictRedis(host="127.0.0.1", port=redis_port, decode_responses=True)
    S, R, OFF = 101, 102, 103  # sender on im 1, receiver on im 2, offline
    cases = []

    def lengths():
        return {l: rds.llen(l) for l in LISTS}

    def case(name, send, cmd, content, online, push):
        """send(); then the online receiver gets (cmd, content) once when
        online; push: the entries this case must append (list, dict)."""
        before = lengths()
        err = ""
        try:
            send()
        except Exception as e:  # noqa: BLE001 — reported
            err = "send: %s" % e
        got = False
        if online is not None and not err:
            deadline = time.time() + 10
            while time.time() < deadline and not online.has(cmd, content):
                time.sleep(0.05)
            got = online.has(cmd, content)
        time.sleep(1.5)  # entries and repeats arrive
        entries = []
        for l in LISTS:
            for e in rds.lrange(l, before[l], -1):
                entries.append([l, json.loads(e)])
        for _, e in entries:
            if "receivers" in e:  # members come from a map: any order
                e["receivers"] = sorted(e["receivers"])
        want = sorted(json.dumps(p, sort_keys=True) for p in push)
        have = sorted(json.dumps({"list": l, **e}, sort_keys=True) for l, e in entries)
        to_sender = [e for l, e in entries if e.get("receiver") == S or S in e.get("receivers", [])]
        ok = not err and (online is None or (got and online.count(cmd, content) == 1)) and have == want and not to_sender
        why = err
        if online is not None and not got:
            why += " not received"
        elif online is not None and online.count(cmd, content) != 1:
            why += " received %d times" % online.count(cmd, content)
        if have != want:
            why += " push entries %s, want %s" % (have, want)
        forwarded = online.count(cmd, content, pushed=True) if online is not None else 0
        cases.append({"case": name, "ok": ok, "why": why.strip(), "entries": have, "forwarded": forwarded})
        print("%-50s %s %s" % (name, "ok" if ok else "FAIL", why.strip()), flush=True)

    r2 = Receiver(R, 24000, room=7001)
    kefu = Receiver(R, 24000, appid=KEFU)
    s1, seq = sender(S)
    time.sleep(2)  # the logins' subscriptions reach the routers

    def im(to, content, cmd=MSG_IM):
        m = IMMessage()
        m.sender, m.receiver, m.content = S, to, content
        return lambda: send_and_ack(s1, seq, cmd, m)

    def rt(to, content, cmd=MSG_RT):
        m = RTMessage()
        m.sender, m.receiver, m.content = S, to, content
        return lambda: send_message(cmd, 0, m, s1)

    def peer(to, content):
        return {"list": "push_queue", "appid": APP, "content": content, "receiver": to, "sender": S}

    def group(gid, content, offline):
        """The group entries of a message: one per router that had an
        offline member (an IM server sends each router the members of
        its own, uid % routers)."""
        parts = {}
        for uid in offline:
            parts.setdefault(uid % routers, []).append(uid)
        return [{"list": "group_push_queue", "appid": APP, "content": content, "group_id": gid, "receivers": sorted(p), "sender": S}
                for p in parts.values()]

    case("peer IM to an online receiver on im 2", im(R, "peer-online"), MSG_IM, "peer-online", r2, [])
    case("peer IM to an offline receiver", im(OFF, "peer-offline"), None, None, None, [peer(OFF, "peer-offline")])
    case("RT to a receiver on im 2", rt(R, "rt-online"), MSG_RT, "rt-online", r2, [])
    send_message(MSG_ENTER_ROOM, 0, 7001, s1)
    time.sleep(1)
    case("room IM to a receiver on im 2", rt(7001, "room-online", MSG_ROOM_IM), MSG_ROOM_IM, "room-online", r2, [])
    case("group IM (normal group)", im(3112, "group-normal", MSG_GROUP_IM), MSG_GROUP_IM, "group-normal", r2,
         group(3112, "group-normal", [OFF, 104]))
    case("group IM (super group)", im(3113, "group-super", MSG_GROUP_IM), MSG_GROUP_IM, "group-super", r2,
         group(3113, "group-super", [OFF, 104]))

    def http(fn, *args):
        def send():
            r = fn(*args)
            if r.status_code != 200:
                raise Exception("HTTP %d %s" % (r.status_code, r.content[:200]))
        return send

    case("HTTP peer message to a receiver on im 2", http(rpc.post_peer_message, APP, S, R, "http-online"), MSG_IM, "http-online", r2, [])
    case("HTTP peer message to an offline receiver", http(rpc.post_peer_message, APP, S, OFF, "http-offline"), None, None, None,
         [peer(OFF, "http-offline")])
    case("HTTP notification to a receiver on im 2", http(rpc.post_peer_notification, APP, R, "notice-online"), MSG_NOTIFICATION,
         "notice-online", r2, [])
    case("HTTP system message to a receiver on im 2", http(rpc.post_system_message, APP, R, "system-online"), MSG_SYSTEM,
         "system-online", r2, [])
    case("HTTP system message to an offline receiver", http(rpc.post_system_message, APP, OFF, "system-offline"), None, None, None,
         [{"list": "system_push_queue", "appid": APP, "content": "system-offline", "receiver": OFF}])
    case("HTTP group message (normal group)", http(rpc.post_group_message, APP, S, 3112, "http-group"), MSG_GROUP_IM, "http-group", r2,
         group(3112, "http-group", [OFF, 104]))

    def v2(to, content):
        m = CustomerMessageV2()
        m.sender_appid, m.sender, m.receiver_appid, m.receiver, m.content = APP, S, KEFU, to, content
        return lambda: send_and_ack(s1, seq, MSG_CUSTOMER_V2, m)

    case("customer v2 message to a receiver on im 2", v2(R, "v2-online"), MSG_CUSTOMER_V2, "v2-online", kefu, [])
    case("customer v2 message to an offline receiver", v2(OFF, "v2-offline"), None, None, None,
         [{"list": "customer_push_queue_v2", "appid": KEFU, "content": "v2-offline", "receiver": OFF, "receiver_appid": KEFU,
           "sender": S, "sender_appid": APP}])
    json.dump(cases, open(out, "w"), indent=1)
    if not all(c["ok"] for c in cases):
        sys.exit(1)


def compare(dirs):
    runs = {}
    for d in dirs:
        m = re.search(r"run-(\d+)-(imr|imstream)$", d.rstrip("/"))
        if not m:
            continue
        own_ = json.load(open(os.path.join(d, "own.json"))) if os.path.exists(os.path.join(d, "own.json")) else {}
        cross_ = json.load(open(os.path.join(d, "cross.json"))) if os.path.exists(os.path.join(d, "cross.json")) else []
        runs[(int(m.group(1)), m.group(2))] = (own_, cross_)
    bad = 0
    for rnd in sorted({k[0] for k in runs}):
        imr_own, imr_cross = runs.get((rnd, "imr"), ({}, []))
        ims_own, ims_cross = runs.get((rnd, "imstream"), ({}, []))
        print("\nround %d: im_service's tests" % rnd)
        print("| test | imr | imstream |\n|---|---|---|")
        for t in sorted(set(imr_own) | set(ims_own)):
            a, b = imr_own.get(t, {}).get("ok"), ims_own.get(t, {}).get("ok")
            print("| %s | %s | %s |" % (t, "pass" if a else "FAIL", "pass" if b else "FAIL"))
            if a and not b:
                bad += 1
        print("\nround %d: cross-server suite (push entries compared entry for entry)" % rnd)
        print("| case | imr | imstream | same entries | forwarded at once (imr / imstream) |\n|---|---|---|---|---|")
        by = {c["case"]: c for c in ims_cross}
        for c in imr_cross:
            o = by.get(c["case"], {})
            same = c["entries"] == o.get("entries")
            print("| %s | %s | %s | %s | %s / %s |" % (c["case"], "pass" if c["ok"] else "FAIL " + c["why"], "pass" if o.get("ok") else
                                                      "FAIL " + o.get("why", "missing"), "yes" if same else "NO",
                                                      c.get("forwarded"), o.get("forwarded")))
            if not o.get("ok") or not same:
                bad += 1
        print("\nimr: %d/%d own tests, %d/%d cases; imstream: %d/%d own tests, %d/%d cases" % (
            sum(v["ok"] for v in imr_own.values()), len(imr_own), sum(c["ok"] for c in imr_cross), len(imr_cross),
            sum(v["ok"] for v in ims_own.values()), len(ims_own), sum(c["ok"] for c in ims_cross), len(ims_cross)))
    print("\n%s" % ("every test that passes with imr passes with imstream, and the push lists are the same" if bad == 0 else
                    "%d differences" % bad))
    sys.exit(1 if bad else 0)


def main():
    args = sys.argv[1:]
    if not args:
        print(__doc__)
        sys.exit(2)
    opts = dict(zip(args[1::2], args[2::2]))
    if args[0] == "own":
        own(opts["--out"])
    elif args[0] == "cross":
        sys.path.insert(0, ".")
        cross(int(opts["--redis-port"]), int(opts.get("--routers", "1")), opts["--out"])
    elif args[0] == "compare":
        compare(args[1:])
    else:
        print(__doc__)
        sys.exit(2)


if __name__ == "__main__":
    main()
