package e2e_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/imstream/imstream/ingest"
	"github.com/imstream/imstream/internal/tools/testkit"
	"github.com/imstream/imstream/internal/tools/trace"
	"github.com/imstream/imstream/schemas"
)

// traceOthers is how many other records TestTrace's input topic holds in
// the window it searches.
const traceOthers = 1_000_000

// TestTrace: for each routing case, `imstream trace` finds the event among
// a million others in the same window and names its hops — the input, the
// delivery to the right server, the push job and its appended entry, the
// dead letter of a wrongly keyed record, nothing (with why) for a
// persistent message to an online user or an unknown group — at offsets
// that hold those records, each output with the decision the fanout made
// and the presence it read; for a peer message, the receiver's presence
// events from the log. The admin port's /trace answers the same. Not found
// is exit status 1, a bad query 2, a read that gave up before a
// partition's end 3 (with what it did not read). (The time to an answer is measured by
// `imstream bench --scenarios trace`, not here.)
func TestTrace(t *testing.T) {
	s := startStack(t, 1, 1)
	ctx := context.Background()
	// A million RT messages of the same app to users never present: the
	// fanout reads each and writes nothing.
	start := time.Now()
	testkit.ProduceMany(t, s.cfg, traceOthers, func(i int) kafkaMessage {
		uid := 1000 + int64(i%50_000)
		v := fmt.Appendf(nil, `{"v":1,"type":"publish","server":"s9","appid":7,"ts":%d,"receiver":%d,"msgid":%d,"msg":{"cmd":%d,"sender":2,"receiver":%d,"content":"other"}}`,
			time.Now().UnixMilli(), uid, 1_000_000+i, schemas.CmdRT, uid)
		return kafkaMessage{Topic: s.cfg.Kafka.Topics.Publish, Key: []byte(ingest.UserKey(app, uid)), Value: v}
	})
	t.Logf("%d other records written in %s", traceOthers, time.Since(start).Round(time.Millisecond))
	s1, s2 := imServer(t, s.cfg, "s1", 1), imServer(t, s.cfg, "s2", 1)
	testkit.Produce(t, s.cfg, groupEvents(s.cfg)...) // 55 = {1,2,3,4,8}
	must(t, s1.Subscribe(ctx, app, 1, true))
	must(t, s1.SubscribeRoom(ctx, app, 9))
	s3 := imServer(t, s.cfg, "s3", 1)
	must(t, s3.Subscribe(ctx, app, 5, true))
	testkit.Eventually(t, 60*time.Second, "users 1 and 5 online", func() bool {
		on1, _ := s.online(t, 1)
		on5, _ := s.online(t, 5)
		return on1 && on5
	})
	// s3 dies without server_down: user 5 is on a dead server once its lease lapsed.
	s.crash(t, s3, "s3", 5)
	im := func(to int64, flag int) schemas.Message {
		return schemas.Message{Cmd: schemas.CmdIM, Flag: flag, Sender: 2, Receiver: to, Content: "hi"}
	}
	meta := func(id int64) ingest.Meta { return ingest.Meta{MsgID: id} }
	must(t, s2.Publish(ctx, app, 1, im(1, schemas.FlagUnpersistent), meta(101)))
	must(t, s2.Publish(ctx, app, 4, im(4, 0), meta(102)))
	must(t, s2.Publish(ctx, app, 1, im(1, 0), meta(103)))
	must(t, s2.PublishRoom(ctx, app, 9, schemas.Message{Cmd: schemas.CmdRoomIM, Sender: 2, Receiver: 9, Content: "room"}, meta(104)))
	push := im(4, 0)
	push.MsgID = 105
	must(t, s2.Push(ctx, app, []int64{4, 8}, push))
	must(t, s2.PublishGroup(ctx, app, 77, schemas.Message{Cmd: schemas.CmdGroupIM, Sender: 2, Receiver: 77, Content: "g"}, meta(106)))
	must(t, s2.PublishGroup(ctx, app, 55, schemas.Message{Cmd: schemas.CmdGroupIM, Sender: 4, Receiver: 55, Content: "group"}, meta(109)))
	must(t, s2.PublishGroup(ctx, app, 55, schemas.Message{Cmd: schemas.CmdSyncGroupNotify, GroupID: 55, SyncKey: 1}, meta(110)))
	must(t, s2.Broadcast(ctx, app, schemas.Message{Cmd: schemas.CmdSystem, Notification: "notice", MsgID: 111}))
	wrong, _ := json.Marshal(&schemas.Publish{Header: schemas.Header{V: 1, Type: schemas.TypePublish, Server: "s2", AppID: app, TS: time.Now().UnixMilli()},
		Receiver: 4, MsgID: 107, Msg: im(4, 0)})
	testkit.Produce(t, s.cfg, kafkaMessage{Topic: s.cfg.Kafka.Topics.Publish, Key: []byte("7:999"), Value: wrong})
	must(t, s2.Publish(ctx, app, 5, schemas.Message{Cmd: schemas.CmdRT, Sender: 2, Receiver: 5, Content: "typing"}, meta(113)))
	must(t, s2.Publish(ctx, app, 1, schemas.Message{Cmd: schemas.CmdRT, Sender: 3, Receiver: 1, Content: "rt without a msgid"}, ingest.Meta{}))
	big := im(4, 0)
	big.Content = strings.Repeat("x", schemas.DefaultMaxBytes)
	huge, _ := json.Marshal(&schemas.Publish{Header: schemas.Header{V: 1, Type: schemas.TypePublish, Server: "s2", AppID: app, TS: time.Now().UnixMilli()},
		Receiver: 4, MsgID: 112, Msg: big})
	testkit.Produce(t, s.cfg, kafkaMessage{Topic: s.cfg.Kafka.Topics.Publish, Key: []byte("7:4"), Value: huge})
	const parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	traced, _ := json.Marshal(&schemas.Publish{Header: schemas.Header{V: 1, Type: schemas.TypePublish, Server: "s2", AppID: app, TS: time.Now().UnixMilli()},
		Receiver: 1, MsgID: 108, Msg: im(1, schemas.FlagUnpersistent)})
	testkit.Produce(t, s.cfg, kafkaMessage{Topic: s.cfg.Kafka.Topics.Publish, Key: []byte("7:1"), Value: traced,
		Headers: []kafkaHeader{{Key: "traceparent", Value: []byte(parent)}}})
	testkit.WaitCaughtUp(t, s.cfg, s.cfg.Fanout.Group, s.cfg.Kafka.Topics.Publish, 5*time.Minute)
	testkit.WaitCaughtUp(t, s.cfg, s.cfg.Fanout.Group, s.cfg.Kafka.Topics.Bulk, 60*time.Second)
	testkit.WaitCaughtUp(t, s.cfg, s.cfg.Pusher.Group, s.cfg.Kafka.Topics.Push, 60*time.Second)

	run := func(args ...string) (trace.Result, int) {
		t.Helper()
		// A read timeout no busy machine reaches: the test is not about
		// time (beside a CPU hog a fetch of the embedded broker took more
		// than the default 20 s); the 1ns case below is about giving up.
		timeout := []string{"--read-timeout", "5m"}
		if slices.Contains(args, "--read-timeout") {
			timeout = nil
		}
		args = append(append([]string{"trace", "--json", "--since", "10m", "--kafka.brokers", s.cfg.Kafka.Brokers[0], "--redis.addrs", s.cfg.Redis.Addrs[0],
			"--presence.lease", s.cfg.Presence.Lease.String()}, timeout...), args...)
		cmd := exec.Command(s.bin, args...)
		began := time.Now()
		out, err := cmd.Output()
		t.Logf("imstream %s: %s", strings.Join(args[10+len(timeout):], " "), time.Since(began).Round(time.Millisecond))
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
			if code > 1 {
				t.Logf("imstream %s: exit %d: %s", strings.Join(args, " "), code, ee.Stderr)
			}
		} else if err != nil {
			t.Fatal(err)
		}
		var res trace.Result
		if code != 2 {
			if err := json.Unmarshal(out, &res); err != nil {
				t.Fatalf("imstream %s: %v\n%s", strings.Join(args, " "), err, out)
			}
		}
		return res, code
	}
	// held checks that each hop's offset holds a record.
	held := func(hs []trace.Hop) {
		for _, h := range hs {
			if _, ok := testkit.ReadAt(t, s.cfg, h.Topic, h.Partition, h.Offset); !ok {
				t.Errorf("hop %+v: no record at that offset", h)
			}
		}
	}
	// hops lists "what topic" per hop, and checks each offset holds a record.
	hops := func(res trace.Result) string {
		var out []string
		for _, h := range res.Hops {
			out = append(out, h.What+" "+h.Topic)
		}
		held(res.Hops)
		held(res.Presence)
		return strings.Join(out, ", ")
	}
	pub, bulk, deliver := s.cfg.Kafka.Topics.Publish, s.cfg.Kafka.Topics.Bulk, s.cfg.Kafka.Topics.DeliverPrefix
	for _, tc := range []struct {
		name     string
		args     []string
		hops     string
		notes    bool   // the trace says why nothing was written
		entry    bool   // a push job whose entry the pusher appended
		decision string // every output's imstream-decision
		presence string // a peer message: what the log shows of its receiver
	}{
		{"peer online, unpersistent: delivered", []string{"--appid", "7", "--msgid", "101", "--uid", "1"}, "input " + pub + ", delivery " + deliver + "s1", false, false,
			"peer present=s1 online=true", "present=s1 online=true"},
		{"peer offline, persistent: a push job, appended", []string{"--appid", "7", "--msgid", "102", "--uid", "4"}, "input " + pub + ", push_job imr.push", false, true,
			"peer present= online=false", "present= online=false (no subscribe of uid 4"},
		{"persistent to an online user: nothing, by design", []string{"--appid", "7", "--msgid", "103", "--uid", "1"}, "input " + pub, true, false,
			"", "present=s1 online=true"},
		{"room: the servers with subscribers", []string{"--appid", "7", "--msgid", "104", "--room", "9"}, "input " + pub + ", delivery " + deliver + "s1", false, false,
			"room present=s1", ""},
		{"MSG_PUSH on the bulk lane", []string{"--appid", "7", "--msgid", "105", "--uid", "4"}, "input " + bulk + ", push_job imr.push", false, true,
			"push receivers=2 offline=2", ""},
		{"unknown group: nothing", []string{"--appid", "7", "--msgid", "106", "--group", "77"}, "input " + pub, true, false, "", ""},
		{"group: one push job for the offline members, sender excluded", []string{"--appid", "7", "--msgid", "109", "--group", "55"}, "input " + pub + ", push_job imr.push", false, true,
			"group members=5 offline=3", ""},
		{"SYNC_GROUP_NOTIFY: the servers where a member is present", []string{"--appid", "7", "--msgid", "110", "--group", "55"}, "input " + pub + ", delivery " + deliver + "s1", false, false,
			"group_notify present=s1", ""},
		{"broadcast: one delivery per server hosting the app", []string{"--appid", "7", "--msgid", "111", "--broadcast"}, "input " + pub + ", delivery " + deliver + "s1", false, false,
			"broadcast present=s1", ""},
		{"wrong key: a dead letter", []string{"--appid", "7", "--msgid", "107", "--uid", "4"}, "dead_letter " + s.cfg.Kafka.Topics.DLQ, false, false, "", ""},
		{"oversize: the input and its dead letter", []string{"--appid", "7", "--msgid", "112", "--uid", "4"}, "input " + pub + ", dead_letter " + s.cfg.Kafka.Topics.DLQ, false, false, "", ""},
		{"RT to a user on a dead server: nothing, and why", []string{"--appid", "7", "--msgid", "113", "--uid", "5"}, "input " + pub, true, false,
			"", "present= online=false (not counted: s3 dead"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, code := run(tc.args...)
			if code != 0 || !res.Found {
				t.Fatalf("exit %d, found %v: %+v", code, res.Found, res)
			}
			if got := hops(res); got != tc.hops {
				t.Errorf("hops %q, want %q", got, tc.hops)
			}
			explained := slices.ContainsFunc(res.Notes, func(n string) bool { return strings.HasPrefix(n, "no ") })
			if tc.notes != explained {
				t.Errorf("notes %q", res.Notes)
			}
			for _, h := range res.Hops[1:] {
				if h.What != "delivery" && h.What != "push_job" {
					continue
				}
				// A push job in a push_jobs record of several carries no decision.
				if h.Decision != tc.decision && (h.What != "push_job" || h.Decision != "") || h.PresenceAt.IsZero() {
					t.Errorf("%s: decision %q at %s, want %q", h.What, h.Decision, h.PresenceAt, tc.decision)
				}
			}
			read := slices.ContainsFunc(res.Notes, func(n string) bool {
				return strings.Contains(n, "presence from the log") && strings.Contains(n, tc.presence)
			})
			if tc.presence != "" && (!read || len(res.Presence) == 0 && !strings.Contains(tc.presence, "no subscribe")) {
				t.Errorf("presence %+v, notes %q: want %q", res.Presence, res.Notes, tc.presence)
			}
			if slices.ContainsFunc(res.Notes, func(n string) bool { return strings.HasPrefix(n, "the fanout read") }) {
				t.Errorf("the log and the decision disagree: %q", res.Notes)
			}
			for _, h := range res.Hops {
				if h.What == "push_job" && tc.entry && !strings.Contains(h.Detail, "; appended") {
					t.Errorf("push job %q: want appended", h.Detail)
				}
				if h.What == "dead_letter" && !strings.Contains(h.Detail, "key_mismatch") && !strings.Contains(h.Detail, "oversize") {
					t.Errorf("dead letter %q: want key_mismatch or oversize", h.Detail)
				}
			}
		})
	}
	// The producer's traceparent travels to the delivery.
	if res, _ := run("--appid", "7", "--msgid", "108", "--uid", "1"); len(res.Hops) != 2 || !strings.Contains(res.Hops[1].Detail, parent) {
		t.Errorf("a traced event's delivery: %+v, want traceparent %s", res.Hops, parent)
	}
	if _, code := run("--appid", "7", "--msgid", "999", "--uid", "1"); code != 1 {
		t.Errorf("an absent msgid: exit %d, want 1", code)
	}
	if _, code := run("--appid", "7", "--msgid", "101"); code != 2 {
		t.Errorf("no receiver: exit %d, want 2", code)
	}
	// A message without a msgid (RT, room messages): by its content and sender.
	if res, code := run("--appid", "7", "--uid", "1", "--content", "without a msgid", "--sender", "3"); code != 0 || len(res.Hops) != 2 ||
		res.Hops[1].What != "delivery" || res.Event.Msg.Content != "rt without a msgid" {
		t.Errorf("by content and sender: exit %d, %+v", code, res)
	}
	if _, code := run("--appid", "7", "--uid", "1", "--content", "without a msgid", "--sender", "4"); code != 1 {
		t.Errorf("by content and another sender: exit %d, want 1", code)
	}
	// A read that gives up (a timeout no record can meet) says what it did
	// not read, and exits 3: the answer may be missing what it holds.
	res, code := run("--appid", "7", "--msgid", "102", "--uid", "4", "--read-timeout", "1ns")
	if code != 3 || len(res.Unread) == 0 {
		t.Errorf("read timeout 1ns: exit %d, unread %+v; want exit 3 and the reads not finished", code, res.Unread)
	}
	for _, u := range res.Unread {
		if u.Next < u.From || u.Next >= u.End {
			t.Errorf("unread %+v: want From <= Next < End", u)
		}
	}
	// The admin port answers the same.
	resp, err := http.Get(fmt.Sprintf("http://%s/trace?appid=7&msgid=101&uid=1&since=5m", s.fanout[0]))
	must(t, err)
	defer resp.Body.Close()
	res = trace.Result{}
	must(t, json.NewDecoder(resp.Body).Decode(&res))
	if resp.StatusCode != 200 || len(res.Hops) != 2 || res.Hops[1].What != "delivery" {
		t.Errorf("/trace: %d %+v", resp.StatusCode, res)
	}
}
