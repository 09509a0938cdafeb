#!/usr/bin/env python3
"""An IM server's half of imstream in Python, on confluent-kafka (librdkafka).

Written from docs/protocol.md only. It shows what every IM server does:

  * produce presence: server_up, a heartbeat every few seconds, subscribe /
    unsubscribe as users come and go, server_down on shutdown;
  * produce messages: publish (online lane, imr.publish), publish_broadcast
    (every connected user of an app) and push (MSG_PUSH, bulk lane,
    imr.publish.bulk);
  * consume its deliver topic imr.deliver.<server>, drop repeats by src, hand
    deliveries over (a broadcast to each local connected user of its app),
    commit after.

Run `python3 imserver.py --brokers HOST:9092 --demo` against a running
imstream (e.g. `make run`): two servers, py-1 and py-2, exchange messages.
Requirements: Debian's python3-confluent-kafka, or `pip install confluent-kafka`.
"""

import argparse
import json
import sys
import threading
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

PRESENCE, PUBLISH, BULK, DELIVER_PREFIX = "imr.presence", "imr.publish", "imr.publish.bulk", "imr.deliver."


def user_key(appid, uid):
    return f"{appid}:{uid}"


class IMServer:
    """The producing half: one per IM server process."""

    def __init__(self, brokers, server, heartbeat=5.0):
        self.server = server
        self.epoch = int(time.time() * 1000)  # a new epoch per start voids the old one's presence
        self.seq = 0
        self.lock = threading.Lock()
        self.errors = []
        self.producer = Producer({
            "bootstrap.servers": brokers,
            # Keys must land where Java and kafka-go put them (docs/protocol.md §1):
            # librdkafka's default, consistent_random, would not.
            "partitioner": "murmur2_random",
            "acks": "all",
            "linger.ms": 2,
        })
        self.heartbeat_every = heartbeat
        self.users = {}  # appid -> {uid: online}: this server's connected users, for broadcasts
        self.stopping = threading.Event()
        self.beat = None

    def _event(self, etype, appid, **fields):
        with self.lock:
            self.seq += 1
            seq = self.seq
        ev = {"v": 1, "type": etype, "server": self.server, "appid": appid,
              "ts": int(time.time() * 1000), "id": f"{self.server}:{self.epoch}:{seq}"}
        ev.update(fields)
        return json.dumps(ev, separators=(",", ":")).encode()

    def _send(self, topic, key, value):
        def done(err, _msg):
            if err is not None:
                self.errors.append(err)
        self.producer.produce(topic, key=key.encode(), value=value, on_delivery=done)
        self.producer.poll(0)

    def flush(self, timeout=30):
        """Waits for every event to be acknowledged; raises on failures."""
        if self.producer.flush(timeout) != 0:
            raise RuntimeError("events not acknowledged in time")
        if self.errors:
            raise KafkaException(self.errors[0])

    # presence (imr.presence)
    def _presence(self, etype, appid, key, **fields):
        self._send(PRESENCE, key, self._event(etype, appid, epoch=self.epoch, **fields))

    def start(self):
        self._presence("server_up", 1, "server:" + self.server)
        self.flush()
        self.beat = threading.Thread(target=self._heartbeats, daemon=True)
        self.beat.start()

    def _heartbeats(self):
        while not self.stopping.wait(self.heartbeat_every):
            self._presence("heartbeat", 1, "server:" + self.server)

    def subscribe(self, appid, uid, online=True):
        self.users.setdefault(appid, {})[uid] = online
        self._presence("subscribe", appid, user_key(appid, uid), uid=uid, online=online)

    def unsubscribe(self, appid, uid):
        self.users.get(appid, {}).pop(uid, None)
        self._presence("unsubscribe", appid, user_key(appid, uid), uid=uid)

    def audience(self, ev):
        """The local users a publish_broadcast delivery is for: the app's
        connected users, only the online ones unless online_only is false."""
        online_only = ev.get("online_only", True)
        return sorted(uid for uid, on in self.users.get(ev["appid"], {}).items() if on or not online_only)

    def close(self):
        self.stopping.set()
        if self.beat:
            self.beat.join()
            self._presence("server_down", 1, "server:" + self.server)
        self.flush()

    # messages (imr.publish: online lane; imr.publish.bulk: bulk lane)
    def publish(self, appid, receiver, msg, msgid=0):
        self._send(PUBLISH, user_key(appid, receiver),
                   self._event("publish", appid, receiver=receiver, msgid=msgid, msg=msg))

    def publish_group(self, appid, group_id, msg, msgid=0):
        self._send(PUBLISH, f"{appid}:group:{group_id}",
                   self._event("publish_group", appid, receiver=group_id, msgid=msgid, msg=msg))

    def broadcast(self, appid, msg, online_only=True, exclude_origin=False):
        """Every connected user of appid: one delivery per IM server hosting
        one; users without a connection get nothing (push to them instead)."""
        fields = {"msg": msg}
        if not online_only:
            fields["online_only"] = False
        if exclude_origin:
            fields["exclude_origin"] = True
        self._send(PUBLISH, f"{appid}:broadcast", self._event("publish_broadcast", appid, **fields))

    def push(self, appid, receivers, msg):
        """im_service's MSG_PUSH: entries for whichever receivers are offline."""
        self._send(BULK, user_key(appid, receivers[0]),
                   self._event("push", appid, receivers=list(receivers), msg=msg))


class Deliveries:
    """The consuming half: this server's deliver topic, repeats dropped."""

    def __init__(self, brokers, server, partitions=4):
        self.topic = DELIVER_PREFIX + server
        # The fanout creates the topic when it first delivers; creating it
        # here lets the consumer start before that.
        admin = AdminClient({"bootstrap.servers": brokers})
        for fut in admin.create_topics([NewTopic(self.topic, partitions, 1)]).values():
            try:
                fut.result()
            except KafkaException as e:
                if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
        self.consumer = Consumer({
            "bootstrap.servers": brokers,
            "group.id": self.topic,  # every process of this server id shares one group
            "enable.auto.commit": False,  # commit only what was handed over
            "auto.offset.reset": "earliest",
        })
        self.consumer.subscribe([self.topic])
        # (deliver partition, src topic@inc, src partition, appid) -> highest src offset handed over
        self.last = {}
        self.repeats = 0

    def poll(self, handler, timeout=0.2):
        """Reads what is waiting, hands the fresh deliveries to handler, commits."""
        msgs = self.consumer.consume(num_messages=500, timeout=timeout)
        fresh, seen = [], {}
        for m in msgs:
            if m.error():
                if m.error().code() in (KafkaError._PARTITION_EOF, KafkaError.UNKNOWN_TOPIC_OR_PART):
                    continue
                raise KafkaException(m.error())
            ev = json.loads(m.value())
            src = ev.get("src")
            if src is not None:
                stream = src["topic"] + ("@" + src["inc"] if src.get("inc") else "")
                k = (m.partition(), stream, src["partition"], ev["appid"])
                last = seen.get(k, self.last.get(k))
                if last is not None and src["offset"] <= last:
                    self.repeats += 1
                    continue
                seen[k] = src["offset"]
            fresh.append(ev)
        if fresh:
            handler(fresh)  # an exception leaves the batch uncommitted: read again after a restart
        self.last.update(seen)
        if msgs:
            self.consumer.commit(asynchronous=False)
        return len(fresh)

    def close(self):
        self.consumer.close()


def demo(brokers, heartbeat):
    """py-1 sends to py-2: real-time messages (delivered), an IM to an
    offline user and a MSG_PUSH (both to push_queue). Prints one JSON line
    per delivery and a summary; exits 1 if a message is missing or doubled."""
    app, online_user = 7, 5001
    a, b = IMServer(brokers, "py-1", heartbeat), IMServer(brokers, "py-2", heartbeat)
    deliveries = Deliveries(brokers, "py-2")
    a.start()
    b.start()
    b.subscribe(app, online_user)
    b.flush()

    got, notices = [], []
    def handler(batch):
        for ev in batch:
            if ev["type"] == "publish_broadcast":
                for uid in b.audience(ev):
                    notices.append((uid, ev["msg"]["notification"]))
                    print(json.dumps({"broadcast": ev["msg"]["notification"], "to": uid, "from_server": ev["server"]}), flush=True)
                continue
            got.append(ev["msg"]["content"])
            print(json.dumps({"delivered": ev["msg"]["content"], "to": ev["receiver"], "from_server": ev["server"]}), flush=True)

    # Until presence has applied the subscribe, RT to the user is dropped
    # (RT is never pushed): probe until one arrives.
    deadline = time.time() + 60
    while not any(c.startswith("probe") for c in got):
        if time.time() > deadline:
            sys.exit("no delivery within 60 s")
        a.publish(app, online_user, {"cmd": 17, "sender": 1, "receiver": online_user, "content": "probe"})
        a.flush()
        deliveries.poll(handler, timeout=0.3)

    want = [f"rt-{i}" for i in range(50)]
    for c in want:
        a.publish(app, online_user, {"cmd": 17, "sender": 1, "receiver": online_user, "content": c})
    a.publish(app, 5002, {"cmd": 4, "sender": 1, "receiver": 5002, "timestamp": 1, "content": "py-offline-im"}, msgid=9)
    a.push(app, [5003, 5004], {"cmd": 4, "sender": 1, "receiver": 5003, "content": "py-push"})
    a.broadcast(app, {"cmd": 21, "notification": "py-broadcast"})
    a.flush()
    deadline = time.time() + 30
    while (sum(1 for c in got if c.startswith("rt-")) < len(want) or not notices) and time.time() < deadline:
        deliveries.poll(handler)
    for _ in range(5):  # anything doubled would arrive now
        deliveries.poll(handler)
    rts = [c for c in got if c.startswith("rt-")]
    deliveries.close()
    b.close()
    a.close()
    print(json.dumps({"rt_sent": len(want), "rt_delivered": len(rts), "in_order": rts == want,
                      "broadcast_to": notices, "repeats_dropped": deliveries.repeats}), flush=True)
    if rts != want or notices != [(online_user, "py-broadcast")]:
        sys.exit(1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--brokers", default="localhost:9092")
    ap.add_argument("--demo", action="store_true", help="run two servers that exchange messages")
    ap.add_argument("--heartbeat", type=float, default=5.0, help="seconds between heartbeats (must be well under presence.lease)")
    args = ap.parse_args()
    if args.demo:
        demo(args.brokers, args.heartbeat)
    else:
        ap.print_help()


if __name__ == "__main__":
    main()
