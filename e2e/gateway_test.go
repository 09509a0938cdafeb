package e2e_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/imstream/imstream/gateway/imr"
	"github.com/imstream/imstream/internal/plumbing/stage"
	"github.com/imstream/imstream/internal/tools/embedded"
	"github.com/imstream/imstream/internal/tools/loadgen"
	"github.com/imstream/imstream/internal/tools/testkit"
	"github.com/imstream/imstream/schemas"
)

// producedBy reports whether m is a publish event, in either format, of an
// IM server whose id starts with prefix.
func producedBy(m kafka.Message, prefix string) bool {
	ev, err := schemas.DecodeKindFormat(m.Value, 1<<20, schemas.KindPublish, stage.Format(&m))
	return err == nil && strings.HasPrefix(ev.Head().Server, prefix)
}

// adminOf is the admin address a process was started with.
func adminOf(p *testkit.Process) string {
	for i, a := range p.Cmd.Args {
		if a == "--admin.listen" && i+1 < len(p.Cmd.Args) {
			return p.Cmd.Args[i+1]
		}
	}
	return ""
}

// connectUser connects an IM server to the gateway at gw from local,
// subscribes uid as online and waits until presence shows it; the
// connection is closed when the test ends.
func (s *stack) connectUser(ctx context.Context, gw, local string, uid int64) *loadgen.Client {
	s.t.Helper()
	c, err := loadgen.Dial(ctx, gw, local)
	must(s.t, err)
	s.t.Cleanup(func() { _ = c.Close() })
	must(s.t, c.Send(imr.CmdSubscribe, sub(app, uid, 1)))
	must(s.t, c.Flush())
	testkit.Eventually(s.t, 30*time.Second, fmt.Sprintf("user %d online", uid), func() bool {
		on, _ := s.online(s.t, uid)
		return on
	})
	return c
}

// gatewayStack starts presence, fanout, pusher and a gateway process on a
// port the kernel picks, and returns the gateway's address and run: its
// first call returns that gateway, each later one starts a gateway again
// on the same address (after the test stopped the previous one).
func gatewayStack(t *testing.T, extra ...string) (*stack, string, func() *testkit.Process) {
	s := startStack(t, 1, 1, extra...)
	flags := []string{"--gateway.heartbeat_interval", "500ms"}
	gw, first := s.startGateway("127.0.0.1:0", flags...)
	run := func() *testkit.Process {
		if p := first; p != nil {
			first = nil
			return p
		}
		_, p := s.startGateway(gw, flags...)
		return p
	}
	return s, gw, run
}

// gatewayAddr is what a gateway logs when it listens ("gateway listening"
// ... addr=host:port).
var gatewayAddr = regexp.MustCompile(`msg="gateway listening".* addr=(\S+)`)

// startGateway starts a gateway process listening on addr and waits until
// it accepts connections; it returns the address it listens on. With port
// 0 the kernel picks the port (no other test can take it first) and the
// address is read from the gateway's log.
func (s *stack) startGateway(addr string, extra ...string) (string, *testkit.Process) {
	_, p := s.start("gateway", append([]string{"--gateway.listen", addr}, extra...)...)
	anyPort := strings.HasSuffix(addr, ":0")
	testkit.Eventually(s.t, 20*time.Second, "gateway listening", func() bool {
		if anyPort {
			b, _ := os.ReadFile(p.Log)
			m := gatewayAddr.FindSubmatch(b)
			if m == nil {
				return false
			}
			addr = string(m[1])
		}
		return embedded.WaitTCP(ctxTimeout(200*time.Millisecond), addr) == nil
	})
	return addr, p
}

func ctxTimeout(d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	_ = cancel // released when it expires
	return ctx
}

func inner(m schemas.Message) []byte { return imr.AppendInner(nil, m) }

func route(appid, receiver, msgid int64, in []byte) []byte {
	return imr.AppendRoute(nil, imr.Route{AppID: appid, Receiver: receiver, MsgID: msgid, DeviceID: 9, Timestamp: time.Now().UnixNano(), Inner: in})
}

func sub(appid, uid int64, online int8) []byte {
	return imr.AppendSubscribe(nil, imr.Subscribe{AppID: appid, UID: uid, Online: online})
}

// drain collects the frames a client received until quiet for d.
func drain(c *loadgen.Client, d time.Duration) []imr.Frame {
	var out []imr.Frame
	for {
		select {
		case f := <-c.Frames():
			out = append(out, f)
		case <-time.After(d):
			return out
		}
	}
}

// receive collects frames from c until it has n or d passed, then what
// more arrives until quiet for 500 ms (a frame too many shows).
func receive(c *loadgen.Client, n int, d time.Duration) []imr.Frame {
	var out []imr.Frame
	deadline := time.After(d)
	for len(out) < n {
		select {
		case f := <-c.Frames():
			out = append(out, f)
		case <-deadline:
			return out
		}
	}
	return append(out, drain(c, 500*time.Millisecond)...)
}

func frameSet(fs []imr.Frame) []string {
	var out []string
	for _, f := range fs {
		out = append(out, fmt.Sprintf("%x", imr.AppendFrame(nil, f)))
	}
	sort.Strings(out)
	return out
}

// TestGatewayRouting: two IM servers speaking imr's protocol; every
// routing rule observed as frames (byte-for-byte what imr would send) on
// the right connection, or entries in the push lists — under im_service's
// router's rules (gateway.rules imr, the default: PUBLISH* forwarded as
// they are and never pushed, pushes only from MSG_PUSH) and under
// docs/protocol.md §4's (gateway.rules imstream).
func TestGatewayRouting(t *testing.T) {
	for _, rules := range []string{"imr", "imstream"} {
		t.Run(rules, func(t *testing.T) { gatewayRouting(t, rules) })
	}
}

func gatewayRouting(t *testing.T, rules string) {
	s, gw, run := gatewayStack(t, "--gateway.rules", rules)
	p := run()
	a, b := twoServers(t, gw)
	testkit.Produce(t, s.cfg, groupEvents(s.cfg)...) // 55 = {1,2,3,4,8}, 66 = {2,4}

	must(t, a.Send(imr.CmdSubscribe, sub(app, 1, 1)))
	must(t, b.Send(imr.CmdSubscribe, sub(app, 2, 0)))
	must(t, b.Send(imr.CmdSubscribe, sub(app, 3, 1)))
	must(t, a.Send(imr.CmdSubscribeRoom, imr.AppendID(nil, imr.ID{AppID: app, ID: 9})))
	must(t, b.Send(imr.CmdSubscribeRoom, imr.AppendID(nil, imr.ID{AppID: app, ID: 9})))
	must(t, a.Flush())
	must(t, b.Flush())
	testkit.Eventually(t, 30*time.Second, "presence via the gateway", func() bool {
		on1, s1 := s.online(t, 1)
		on3, s3 := s.online(t, 3)
		_, s2 := s.online(t, 2)
		return on1 && on3 && len(s2) == 1 && fmt.Sprint(s1) == "[imr-127.0.0.2]" && fmt.Sprint(s3) == "[imr-127.0.0.3]"
	})
	if rules == "imr" {
		// A group message goes to the servers the fanout finds live, which
		// can lag presence's users by a moment after a server connects
		// (the note on issue 35): wait until a probe group message from A
		// reaches B, then let what the probes brought go.
		testkit.Eventually(t, 30*time.Second, "a group message from A reaching B", func() bool {
			must(t, a.Send(imr.CmdPublishGroup, route(app, 99, 0, inner(schemas.Message{Cmd: 8, Version: 2, Sender: 1, Receiver: 99, Content: "probe"}))))
			must(t, a.Flush())
			return len(drain(b, 300*time.Millisecond)) > 0
		})
		drain(b, time.Second)
	}

	im := func(to int64, flag int, content string) []byte {
		return inner(schemas.Message{Cmd: 4, Version: 2, Flag: flag, Seq: 7, Sender: 1, Receiver: to, Timestamp: 100, MsgID: 3, Content: content})
	}
	up := schemas.FlagUnpersistent
	asIMR := rules == "imr"
	var wantA, wantB [][]byte // bodies each connection must receive, with their route cmd
	sendA := func(cmd uint8, body []byte, toB bool) {
		must(t, a.Send(cmd, body))
		if toB {
			wantB = append(wantB, imr.AppendFrame(nil, imr.Frame{Cmd: cmd, Body: body}))
		}
	}
	sendA(imr.CmdPublish, route(app, 3, 1, im(3, 0, "persistent-online")), asIMR)
	sendA(imr.CmdPublish, route(app, 4, 2, im(4, 0, "persistent-offline")), false)
	sendA(imr.CmdPublish, route(app, 3, 3, im(3, up, "unpersistent-online")), true)
	sendA(imr.CmdPublish, route(app, 2, 4, im(2, up, "unpersistent-present-offline")), true)
	sendA(imr.CmdPublish, route(app, 1, 5, inner(schemas.Message{Cmd: 17, Sender: 9, Receiver: 1, Content: "rt-to-origin-only"})), false)
	sendA(imr.CmdPublish, route(app, 3, 6, inner(schemas.Message{Cmd: 17, Sender: 1, Receiver: 3, Content: "rt"})), true)
	sendA(imr.CmdPublishGroup, route(app, 55, 7, inner(schemas.Message{Cmd: 8, Version: 2, Sender: 1, Receiver: 55, Content: "group"})), asIMR)
	sendA(imr.CmdPublishGroup, route(app, 66, 8, inner(schemas.Message{Cmd: 33, GroupID: 66, SyncKey: 5})), true)
	sendA(imr.CmdPublishRoom, route(app, 9, 9, inner(schemas.Message{Cmd: 20, Sender: 1, Receiver: 9, Content: "room"})), true)
	sendA(imr.CmdPush, imr.AppendPush(nil, imr.Push{AppID: app, Receivers: []int64{1, 4, 8}, Inner: im(4, 0, "msg-push")}), false)
	sendA(imr.CmdPublish, route(app, 4, 10, inner(schemas.Message{Cmd: 21, Notification: "system"})), false)
	sendA(imr.CmdPublish, route(app, 4, 11, inner(schemas.Message{Cmd: 64, SenderAppID: 3, Sender: 30, ReceiverAppID: app, Receiver: 4, Timestamp: 100, Content: "v2"})), false)
	publishes, pushes := 12, 1
	if asIMR {
		// What an im_service IM server sends since 2019: a MSG_PUSH beside
		// each PUBLISH whose receivers may be offline; and any inner
		// command, forwarded as it is (MSG_NOTIFICATION, 36).
		sendA(imr.CmdPush, imr.AppendPush(nil, imr.Push{AppID: app, Receivers: []int64{2, 4, 8},
			Inner: inner(schemas.Message{Cmd: 8, Version: 2, Sender: 1, Receiver: 55, Content: "group-push"})}), false)
		sendA(imr.CmdPush, imr.AppendPush(nil, imr.Push{AppID: app, Receivers: []int64{4}, Inner: inner(schemas.Message{Cmd: 21, Notification: "system-push"})}), false)
		sendA(imr.CmdPush, imr.AppendPush(nil, imr.Push{AppID: app, Receivers: []int64{4},
			Inner: inner(schemas.Message{Cmd: 64, SenderAppID: 3, Sender: 30, ReceiverAppID: app, Receiver: 4, Timestamp: 100, Content: "v2-push"})}), false)
		sendA(imr.CmdPublish, route(app, 3, 13, imr.AppendFrame(nil, imr.Frame{Cmd: 36, Version: 1, Body: []byte(`{"notification":"n"}`)})), true)
		sendA(imr.CmdPublishGroup, route(app, 77, 14, imr.AppendFrame(nil, imr.Frame{Cmd: 36, Version: 1, Body: []byte(`{"group":"n"}`)})), true)
		publishes, pushes = 14, 4
	}
	body := route(app, 1, 12, inner(schemas.Message{Cmd: 17, Sender: 3, Receiver: 1, Content: "rt-b-to-a"}))
	must(t, b.Send(imr.CmdPublish, body))
	wantA = append(wantA, imr.AppendFrame(nil, imr.Frame{Cmd: imr.CmdPublish, Body: body}))
	must(t, a.Flush())
	must(t, b.Flush())

	count := func(topic string) int {
		n := 0
		for _, m := range testkit.ReadAll(t, s.cfg, topic) {
			if producedBy(m, "imr-") {
				if stage.Format(&m) != schemas.FormatBinary {
					t.Fatalf("the gateway wrote %s without the binary format's header", m.Value)
				}
				n++
			}
		}
		return n
	}
	testkit.Eventually(t, 30*time.Second, "publish events produced, the push on the bulk lane", func() bool {
		return count(s.cfg.Kafka.Topics.Publish) >= publishes && count(s.cfg.Kafka.Topics.Bulk) >= pushes
	})
	testkit.WaitCaughtUp(t, s.cfg, s.cfg.Fanout.Group, s.cfg.Kafka.Topics.Publish, 60*time.Second)
	testkit.WaitCaughtUp(t, s.cfg, s.cfg.Fanout.Group, s.cfg.Kafka.Topics.Bulk, 60*time.Second)
	testkit.WaitCaughtUp(t, s.cfg, s.cfg.Pusher.Group, s.cfg.Kafka.Topics.Push, 60*time.Second)
	// Each connection's expected frames, however late its deliver consumer
	// got its partitions (a rebalance), then whatever more comes.
	gotA, gotB := receive(a, len(wantA), 60*time.Second), receive(b, len(wantB), 60*time.Second)
	hexes := func(bs [][]byte) []string {
		var out []string
		for _, x := range bs {
			out = append(out, fmt.Sprintf("%x", x))
		}
		sort.Strings(out)
		return out
	}
	if fmt.Sprint(frameSet(gotA)) != fmt.Sprint(hexes(wantA)) {
		t.Errorf("connection A got %d frames %v\nwant %d %v", len(gotA), frameSet(gotA), len(wantA), hexes(wantA))
	}
	if fmt.Sprint(frameSet(gotB)) != fmt.Sprint(hexes(wantB)) {
		t.Errorf("connection B got %d frames, want %d (byte-identical)\n got %v\nwant %v", len(gotB), len(wantB), frameSet(gotB), hexes(wantB))
	}
	rc := testkit.RedisClient(t, s.cfg.Redis.Addrs[0])
	lists := map[string][]string{
		"push_queue": {`{"appid":7,"content":"msg-push","receiver":4,"sender":1}`, `{"appid":7,"content":"msg-push","receiver":8,"sender":1}`,
			`{"appid":7,"content":"persistent-offline","receiver":4,"sender":1}`, `{"appid":7,"content":"unpersistent-present-offline","receiver":2,"sender":1}`},
		"group_push_queue":       {`{"appid":7,"content":"group","group_id":55,"receivers":[2,4,8],"sender":1}`},
		"system_push_queue":      {`{"appid":7,"content":"system","receiver":4}`},
		"customer_push_queue_v2": {`{"appid":7,"content":"v2","receiver":4,"receiver_appid":7,"sender":30,"sender_appid":3}`},
	}
	if asIMR { // imr's push service: entries from MSG_PUSH only
		lists = map[string][]string{
			"push_queue":             {`{"appid":7,"content":"msg-push","receiver":4,"sender":1}`},
			"group_push_queue":       {`{"appid":7,"content":"group-push","group_id":55,"receivers":[2,4,8],"sender":1}`},
			"system_push_queue":      {`{"appid":7,"content":"system-push","receiver":4}`},
			"customer_push_queue_v2": {`{"appid":7,"content":"v2-push","receiver":4,"receiver_appid":7,"sender":30,"sender_appid":3}`},
		}
	}
	if dead := testkit.ReadAll(t, s.cfg, s.cfg.Kafka.Topics.DLQ); len(dead) > 0 {
		t.Errorf("%d dead letters, the first %s", len(dead), dead[0].Value)
	}
	for l, want := range lists {
		got := rc.LRange(context.Background(), l, 0, -1).Val()
		sort.Strings(got)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s = %q\nwant %q", l, got, want)
		}
	}

	// B disconnects: the gateway's series of B's deliver consumer go with
	// it (with server_id ip_port they would otherwise grow without bound).
	gwAdmin := adminOf(p)
	deliverB := `topic="` + s.cfg.Kafka.Topics.DeliverPrefix + `imr-127.0.0.3"`
	if !strings.Contains(testkit.MetricsText(t, gwAdmin), deliverB) {
		t.Fatalf("no series of B's deliver consumer while B is connected")
	}
	b.Close()
	testkit.Eventually(t, 30*time.Second, "B's deliver series deleted", func() bool {
		return !strings.Contains(testkit.MetricsText(t, gwAdmin), deliverB)
	})
	if !strings.Contains(testkit.MetricsText(t, gwAdmin), `topic="`+s.cfg.Kafka.Topics.DeliverPrefix+`imr-127.0.0.2"`) {
		t.Errorf("A's deliver series went with B's")
	}
}

// TestGatewayBadFrame: a malformed frame closes only that connection, with
// a metric; a push of an unroutable inner message is dead-lettered and the
// connection stays.
func TestGatewayBadFrame(t *testing.T) {
	s, gw, run := gatewayStack(t)
	p := run()
	_ = p
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	good := s.connectUser(ctx, gw, "127.0.0.2", 1)

	// A MSG_PUSH of an unknown inner command: dead-lettered, connection
	// kept. (A PUBLISH of it is forwarded as it is, as imr does.)
	must(t, good.Send(imr.CmdPush, imr.AppendPush(nil, imr.Push{AppID: app, Receivers: []int64{1}, Inner: imr.AppendFrame(nil, imr.Frame{Cmd: 99})})))
	must(t, good.Flush())
	testkit.Eventually(t, 20*time.Second, "dead letter", func() bool {
		return len(testkit.ReadAll(t, s.cfg, s.cfg.Kafka.Topics.DLQ)) == 1
	})

	// A frame claiming a 40 000-byte body: that connection is closed.
	badConn, err := embedded.DialTCP(gw, "127.0.0.5")
	must(t, err)
	_, _ = badConn.Write(imr.AppendFrame(nil, imr.Frame{Cmd: imr.CmdPublish})[:0])
	_, _ = badConn.Write([]byte{0, 0, 0x9c, 0x40, 0, 0, 0, 0, imr.CmdPublish, 0, 0, 0})
	_ = badConn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := badConn.Read(make([]byte, 1)); err == nil {
		t.Fatalf("connection with a bad frame not closed (read %d bytes)", n)
	}
	_ = badConn.Close()

	// The good connection still routes.
	peer, err := loadgen.Dial(ctx, gw, "127.0.0.3")
	must(t, err)
	defer peer.Close()
	body := route(app, 1, 2, inner(schemas.Message{Cmd: 17, Sender: 2, Receiver: 1, Content: "still here"}))
	must(t, peer.Send(imr.CmdPublish, body))
	must(t, peer.Flush())
	select {
	case f := <-good.Frames():
		if !bytes.Equal(f.Body, body) {
			t.Fatalf("unexpected frame %x", f.Body)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("good connection stopped receiving after another connection's bad frame")
	}
}

// TestGatewayKill: SIGKILL the gateway while IM servers are connected;
// they reconnect and replay their subscriptions, and nothing the gateway
// had accepted (produced) before the kill is lost.
func TestGatewayKill(t *testing.T) {
	if testing.Short() {
		t.Skip("integration")
	}
	// A lease long enough that B's server stays alive across the restart.
	s, gw, run := gatewayStack(t, "--presence.lease", "60s")
	p := run()
	a, b := twoServers(t, gw)
	must(t, b.Send(imr.CmdSubscribe, sub(app, 3, 1)))
	must(t, b.Flush())
	testkit.Eventually(t, 30*time.Second, "presence", func() bool { on, _ := s.online(t, 3); return on })

	// Freeze the fanout: nothing accepted now is routed before the kill.
	fanout := s.procs["fanout"]
	fanout.Signal(syscall.SIGSTOP)
	const n = 300
	for i := 0; i < n; i++ {
		must(t, a.Send(imr.CmdPublish, route(app, 3, int64(i), inner(schemas.Message{Cmd: 17, Sender: 1, Receiver: 3, Content: fmt.Sprintf("rt-%d", i)}))))
		// an offline receiver: as an im_service IM server does, a MSG_PUSH
		must(t, a.Send(imr.CmdPush, imr.AppendPush(nil, imr.Push{AppID: app, Receivers: []int64{4},
			Inner: inner(schemas.Message{Cmd: 4, Version: 2, Sender: 1, Receiver: 4, Content: fmt.Sprintf("m-%d", i)})})))
	}
	must(t, a.Flush())
	testkit.Eventually(t, 30*time.Second, "everything accepted by the gateway", func() bool {
		c := 0
		for _, topic := range []string{s.cfg.Kafka.Topics.Publish, s.cfg.Kafka.Topics.Bulk} {
			for _, m := range testkit.ReadAll(t, s.cfg, topic) {
				if producedBy(m, "imr-127.0.0.2") {
					c++
				}
			}
		}
		return c >= 2*n
	})
	p.Kill()
	t.Log("gateway killed with every event accepted and none routed yet")
	// The fanout now routes into the dead connection's deliver topic; the
	// backlog must reach B once it has reconnected to a new gateway.
	fanout.Signal(syscall.SIGCONT)
	testkit.WaitCaughtUp(t, s.cfg, s.cfg.Fanout.Group, s.cfg.Kafka.Topics.Publish, 60*time.Second)
	testkit.WaitCaughtUp(t, s.cfg, s.cfg.Fanout.Group, s.cfg.Kafka.Topics.Bulk, 60*time.Second)
	run()
	seen := map[string]int{}
	deadline := time.After(90 * time.Second)
	for len(seen) < n {
		select {
		case f := <-b.Frames():
			rt, err := imr.ParseRoute(f.Body)
			must(t, err)
			m, err := imr.ParseInner(rt.Inner)
			must(t, err)
			seen[m.Content]++
		case <-deadline:
			t.Fatalf("after the gateway restart: %d of %d deliveries arrived", len(seen), n)
		}
	}
	doubled := 0
	for _, c := range seen {
		doubled += c - 1
	}
	t.Logf("all %d deliveries arrived after the kill (%d repeated: written before the kill, committed after)", n, doubled)
	testkit.WaitCaughtUp(t, s.cfg, s.cfg.Pusher.Group, s.cfg.Kafka.Topics.Push, 60*time.Second)
	rc := testkit.RedisClient(t, s.cfg.Redis.Addrs[0])
	entries := rc.LRange(context.Background(), "push_queue", 0, -1).Val()
	uniq := map[string]bool{}
	for _, e := range entries {
		uniq[e] = true
	}
	if len(entries) != n || len(uniq) != n {
		t.Fatalf("push_queue: %d entries, %d distinct; want %d exactly once", len(entries), len(uniq), n)
	}
}

// twoServers connects IM servers A (127.0.0.2) and B (127.0.0.3) to the
// gateway at gw, for the rest of the test.
func twoServers(t *testing.T, gw string) (a, b *loadgen.Client) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	var err error
	a, err = loadgen.Dial(ctx, gw, "127.0.0.2")
	must(t, err)
	t.Cleanup(func() { _ = a.Close() })
	b, err = loadgen.Dial(ctx, gw, "127.0.0.3")
	must(t, err)
	t.Cleanup(func() { _ = b.Close() })
	return a, b
}
