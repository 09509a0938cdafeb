package gateway

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/imstream/imstream/gateway/imr"
	"github.com/imstream/imstream/ingest"
	"github.com/imstream/imstream/internal/plumbing/config"
	"github.com/imstream/imstream/internal/plumbing/kafkax"
	"github.com/imstream/imstream/internal/tools/embedded"
	"github.com/imstream/imstream/internal/tools/testkit"
	"github.com/imstream/imstream/schemas"
)

func newTestGateway(t *testing.T, mutate func(*config.Config)) *Gateway {
	t.Helper()
	cfg := config.Default()
	if mutate != nil {
		mutate(&cfg)
	}
	g, err := New(cfg.Gateway, cfg.Fanout.FairShare, testkit.StageEnv(cfg))
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// TestEvent: each route command becomes its event on its lane; with
// gateway.rules imr (the default) the publish events say route "imr" and an
// inner message the gateway cannot decode is forwarded as it is, as imr
// does, while with imstream it is unroutable (dead-lettered, the
// connection stays), as is a push's under both; a route body that does not
// parse, or an unknown command with a body, closes the connection; an empty
// unknown command and a push without receivers produce nothing.
func TestEvent(t *testing.T) {
	for _, rules := range []string{"imr", "imstream"} {
		t.Run(rules, func(t *testing.T) { testEvent(t, rules) })
	}
}

func testEvent(t *testing.T, rules string) {
	g := newTestGateway(t, func(c *config.Config) { c.Gateway.Rules = rules })
	k := g.env.Kafka.Topics
	c := &conn{g: g, id: "imr-10.0.0.1", enc: ingest.NewEncoder("imr-10.0.0.1", 1, ingest.Topics{Presence: k.Presence, Publish: k.Publish, Bulk: k.Bulk})}
	routed := ""
	if rules == "imr" {
		c.enc.Route(schemas.RouteIMR)
		routed = `"route":"imr"`
	}
	im := imr.AppendInner(nil, schemas.Message{Cmd: schemas.CmdIM, Version: 2, Sender: 1, Receiver: 2, Content: "hi"})
	route := imr.AppendRoute(nil, imr.Route{AppID: 7, Receiver: 2, Inner: im})
	notification := imr.AppendFrame(nil, imr.Frame{Cmd: 36, Version: 1, Body: []byte(`{"n":1}`)}) // MSG_NOTIFICATION
	// what an inner message the gateway cannot decode becomes: with imr's
	// rules a publish with it as raw, else nothing (dead-lettered)
	opaque := func(topic, typ string) (string, string, string) {
		if rules == "imr" {
			return topic, typ, ""
		}
		return "", "", "unroutable"
	}
	type tc struct {
		name  string
		f     imr.Frame
		topic string
		typ   string
		err   string // "" none, "unroutable", "close"
	}
	cases := []tc{
		{"subscribe", imr.Frame{Cmd: imr.CmdSubscribe, Body: imr.AppendSubscribe(nil, imr.Subscribe{AppID: 7, UID: 2, Online: 1})}, k.Presence, `"type":"subscribe"`, ""},
		{"publish", imr.Frame{Cmd: imr.CmdPublish, Body: route}, k.Publish, `"type":"publish"`, ""},
		{"publish_group", imr.Frame{Cmd: imr.CmdPublishGroup, Body: route}, k.Publish, `"type":"publish_group"`, ""},
		{"push goes to the bulk lane, without raw", imr.Frame{Cmd: imr.CmdPush, Body: imr.AppendPush(nil, imr.Push{AppID: 7, Receivers: []int64{2, 3}, Inner: im})}, k.Bulk, `"receivers":[2,3]`, ""},
		{"push without receivers", imr.Frame{Cmd: imr.CmdPush, Body: imr.AppendPush(nil, imr.Push{AppID: 7, Inner: im})}, "", "", ""},
		{"push of an inner message that does not parse", imr.Frame{Cmd: imr.CmdPush, Body: imr.AppendPush(nil, imr.Push{AppID: 7, Receivers: []int64{2}, Inner: notification})}, "", "", "unroutable"},
		{"truncated route body", imr.Frame{Cmd: imr.CmdPublish, Body: route[:10]}, "", "", "close"},
		{"unknown command with a body", imr.Frame{Cmd: 99, Body: []byte{1}}, "", "", "close"},
		{"unknown command without a body", imr.Frame{Cmd: 99}, "", "", ""},
	}
	add := func(name string, f imr.Frame, typ string) {
		topic, typ, err := opaque(k.Publish, typ)
		cases = append(cases, tc{name, f, topic, typ, err})
	}
	add("inner message too short", imr.Frame{Cmd: imr.CmdPublish, Body: imr.AppendRoute(nil, imr.Route{AppID: 7, Receiver: 2, Inner: []byte{0, 0, 0, 9, 1}})}, `"raw":"AAAACQE="`)
	add("MSG_NOTIFICATION (36) to a peer", imr.Frame{Cmd: imr.CmdPublish, Body: imr.AppendRoute(nil, imr.Route{AppID: 7, Receiver: 2, Inner: notification})}, `"cmd":36`)
	add("MSG_NOTIFICATION (36) to a group", imr.Frame{Cmd: imr.CmdPublishGroup, Body: imr.AppendRoute(nil, imr.Route{AppID: 7, Receiver: 9, Inner: notification})}, `"type":"publish_group"`)
	for _, tc := range cases {
		rec, _, err := c.event(tc.f)
		var u unroutable
		switch {
		case tc.err == "unroutable" && !errors.As(err, &u):
			t.Errorf("%s: err %v, want unroutable", tc.name, err)
		case tc.err == "close" && (err == nil || errors.As(err, &u)):
			t.Errorf("%s: err %v, want an error that closes the connection", tc.name, err)
		case tc.err == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		}
		if rec.Topic != tc.topic || !strings.Contains(string(rec.Value), tc.typ) {
			t.Errorf("%s: record on %q: %s; want topic %q containing %s", tc.name, rec.Topic, rec.Value, tc.topic, tc.typ)
		}
		if tc.topic == k.Bulk && strings.Contains(string(rec.Value), `"raw"`) {
			t.Errorf("%s: a push carries msg.raw: %s", tc.name, rec.Value)
		}
		if tc.topic != "" && tc.topic != k.Presence && !strings.Contains(string(rec.Value), routed) {
			t.Errorf("%s: %s, want %s", tc.name, rec.Value, routed)
		}
		if tc.topic == k.Publish {
			if _, err := schemas.Decode(rec.Value, 0); err != nil {
				t.Errorf("%s: the event does not decode: %v", tc.name, err)
			}
		}
	}
}

// TestClaim: connections from one address get imr-<ip>, imr-<ip>-2, …; a
// released id is taken again by the next connection (a reconnect keeps its
// deliver topic); ip_port gives each connection its own id.
func TestClaim(t *testing.T) {
	g := newTestGateway(t, nil)
	addr := &net.TCPAddr{IP: net.ParseIP("10.0.0.1"), Port: 5000}
	a, b, c := &conn{}, &conn{}, &conn{}
	g.claim(a, g.serverID(addr))
	g.claim(b, g.serverID(addr))
	if a.id != "imr-10.0.0.1" || b.id != "imr-10.0.0.1-2" {
		t.Fatalf("ids %q %q", a.id, b.id)
	}
	g.release(a)
	g.claim(c, g.serverID(addr))
	if c.id != "imr-10.0.0.1" {
		t.Errorf("after a release: %q, want the freed id", c.id)
	}
	if n := len(g.DeliverGroups()); n != 2 {
		t.Errorf("deliver groups of %d connections, want 2", n)
	}
	gp := newTestGateway(t, func(c *config.Config) { c.Gateway.ServerID = "ip_port" })
	if id := gp.serverID(addr); id != "imr-10.0.0.1_5000" {
		t.Errorf("ip_port id %q", id)
	}
}

// TestBackpressure: with the broker refusing every produce, a connection's
// queue fills and the gateway stops reading its socket — the IM server's
// writes block — rather than drop anything. When the connection then ends,
// the session ends too once the give-up time has run out (even with its
// queue full), and every event it read is counted as lost, none silently.
func TestBackpressure(t *testing.T) {
	const queue, frames = 4, 200
	k := testkit.Kafka(t, embedded.KafkaOptions{})
	cl := k.Cluster()
	cl.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		cl.KeepControl()
		return nil, errors.New("produce refused by the test"), true
	})
	cfg := config.Default()
	cfg.Kafka.Brokers = []string{k.Addr}
	cfg.Gateway.QueueSize = queue
	cfg.Gateway.HeartbeatInterval = time.Hour
	g, err := New(cfg.Gateway, cfg.Fanout.FairShare, testkit.StageEnvOn(cfg))
	if err != nil {
		t.Fatal(err)
	}
	g.giveUp = 500 * time.Millisecond
	if err := kafkax.MustConn(cfg.Kafka).EnsureTopics(context.Background(), 1, map[string]int{
		cfg.Kafka.Topics.Presence: 1, cfg.Kafka.Topics.Publish: 1, cfg.Kafka.Topics.Bulk: 1}); err != nil {
		t.Fatal(err)
	}
	client, server := net.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ended := make(chan struct{})
	go func() { defer close(ended); g.session(ctx, server, server) }()

	var written atomic.Int64
	go func() {
		for uid := int64(1); uid <= frames; uid++ {
			f := imr.AppendFrame(nil, imr.Frame{Cmd: imr.CmdSubscribe, Body: imr.AppendSubscribe(nil, imr.Subscribe{AppID: 7, UID: uid, Online: 1})})
			if _, err := client.Write(f); err != nil {
				return
			}
			written.Add(1)
		}
	}()
	read := func() float64 {
		return testutil.ToFloat64(g.m.frames.WithLabelValues(strconv.Itoa(int(imr.CmdSubscribe))))
	}
	// The reader stops once the producer holds a batch (what was waiting,
	// at most a queue's worth) and the queue is full again: a few frames,
	// far fewer than were offered, and no more however long we wait.
	deadline := time.Now().Add(10 * time.Second)
	for g.Queued() < queue+1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	n, w := read(), written.Load()
	time.Sleep(500 * time.Millisecond) // would the reader go on?
	if read() != n || written.Load() != w || n > 2*queue+1 || w >= frames {
		t.Fatalf("with the queue full the gateway read %v then %v frames and the IM server wrote %d then %d of %d: reading did not stop",
			n, read(), w, written.Load(), frames)
	}
	if q := g.Queued(); q < queue || q > 2*queue+2 {
		t.Errorf("queued %d events, want the queue (%d), the producer's batch and the blocked send", q, queue)
	}
	if lost := testutil.ToFloat64(g.env.Metrics.Skipped.WithLabelValues(Stage, "produce_failed")); lost != 0 {
		t.Errorf("%v events counted lost while the connection is open", lost)
	}

	// The IM server goes away and the gateway stops, the broker still
	// refusing: the session must end after the give-up time.
	_ = client.Close()
	cancel()
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the session of a closed connection with a full queue did not end")
	}
	lost := testutil.ToFloat64(g.env.Metrics.Skipped.WithLabelValues(Stage, "produce_failed"))
	if want := read() + 2; lost != want { // the subscribes read (queued or not), server_up and server_down
		t.Errorf("%v events counted lost, want every event read: %v", lost, want)
	}
	if q := g.Queued(); q != 0 {
		t.Errorf("%d events still queued after the session ended", q)
	}
}

// TestAllowCIDRs: with gateway.allow_cidrs only sources in the listed
// networks may connect (IPv4 clients of a dual-stack listener included);
// without it any source may.
func TestAllowCIDRs(t *testing.T) {
	open := newTestGateway(t, nil)
	g := newTestGateway(t, func(c *config.Config) { c.Gateway.AllowCIDRs = []string{"10.1.0.0/16", "192.168.7.9/32", "fd00::/8"} })
	for addr, want := range map[string]bool{
		"10.1.200.3:5000":        true,
		"10.2.0.1:5000":          false,
		"192.168.7.9:1":          true,
		"192.168.7.10:1":         false,
		"[::ffff:10.1.0.1]:4444": true, // IPv4-mapped
		"[fd12::1]:4444":         true,
		"[2001:db8::1]:4444":     false,
		"127.0.0.1:4444":         false,
		"[::1]:4444":             false,
	} {
		a, err := net.ResolveTCPAddr("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if got := g.allowed(a); got != want {
			t.Errorf("%s allowed = %v, want %v", addr, got, want)
		}
		if !open.allowed(a) {
			t.Errorf("%s refused without allow_cidrs", addr)
		}
	}
	bad := config.Default()
	bad.Gateway.AllowCIDRs = []string{"10.1.0.0"}
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "gateway.allow_cidrs") {
		t.Errorf("a network without a prefix length: %v", err)
	}
}
