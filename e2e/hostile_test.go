package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/imstream/imstream/gateway/imr"
	"github.com/imstream/imstream/internal/plumbing/kafkax"
	"github.com/imstream/imstream/internal/tools/loadgen"
	"github.com/imstream/imstream/internal/tools/testkit"
	"github.com/imstream/imstream/schemas"
)

// deadLetters returns the reason codes of the dead-letter topic's records.
func deadLetters(t *testing.T, s *stack) []string {
	t.Helper()
	var out []string
	for _, m := range testkit.ReadAll(t, s.cfg, s.cfg.Kafka.Topics.DLQ) {
		for _, h := range m.Headers {
			if h.Key == "reason" {
				code, _, _ := strings.Cut(string(h.Value), ":")
				out = append(out, code)
			}
		}
	}
	return out
}

func count(xs []string, x string) int {
	n := 0
	for _, v := range xs {
		if v == x {
			n++
		}
	}
	return n
}

// TestKeyAndEpochChecks lies in fields as a hostile IM server would: keys
// that do not match the body (another receiver, empty, null) and an epoch
// far in the future. Each is dead-lettered with its reason, counted, and
// the server id stays usable.
func TestKeyAndEpochChecks(t *testing.T) {
	s := startStack(t, 1, 1)
	cfg := s.cfg
	rc := testkit.RedisClient(t, cfg.Redis.Addrs[0])
	enc := newPublishEncoder(cfg.Kafka.Topics.Publish)
	wrong, empty, null := enc(101, "wrong-key"), enc(101, "empty-key"), enc(101, "null-key")
	wrong.Key, empty.Key, null.Key = []byte("7:999"), []byte{}, nil
	testkit.Produce(t, cfg, wrong, empty, null, enc(101, "right-key"))

	presence := func(typ schemas.Type, key string, epoch, uid int64) kafka.Message {
		ev := schemas.Presence{Header: schemas.Header{V: 1, Type: typ, Server: "im-9", AppID: app}, Epoch: epoch, UID: uid}
		if typ == schemas.TypeSubscribe {
			ev.Online = boolPtr(true)
		}
		b, _ := json.Marshal(&ev)
		return kafka.Message{Topic: cfg.Kafka.Topics.Presence, Key: []byte(key), Value: b}
	}
	testkit.Produce(t, cfg, presence(schemas.TypeHeartbeat, "server:im-9", math.MaxInt64, 0))
	now := time.Now().UnixMilli()
	testkit.Produce(t, cfg, presence(schemas.TypeServerUp, "server:im-9", now, 0), presence(schemas.TypeSubscribe, "7:5", now, 5))

	testkit.Eventually(t, 30*time.Second, "im-9's user online after the poisoned heartbeat", func() bool {
		on, _ := s.online(t, 5)
		return on
	})
	testkit.Eventually(t, 30*time.Second, "the right-keyed message in push_queue", func() bool {
		n, _ := rc.LLen(context.Background(), "push_queue").Result()
		return n == 1
	})
	testkit.WaitCaughtUp(t, cfg, cfg.Fanout.Group, cfg.Kafka.Topics.Publish, 30*time.Second)
	testkit.WaitCaughtUp(t, cfg, cfg.Presence.Group, cfg.Kafka.Topics.Presence, 30*time.Second)
	dl := deadLetters(t, s)
	if n := count(dl, schemas.ReasonKeyMismatch); n != 3 {
		t.Errorf("%d key_mismatch dead letters, want 3 (all: %v)", n, dl)
	}
	if n := count(dl, "epoch_ahead"); n != 1 {
		t.Errorf("%d epoch_ahead dead letters, want 1 (all: %v)", n, dl)
	}
	if n := metric(t, s.fanout, `imstream_key_mismatch_total{action="rejected",stage="fanout"}`); n != 3 {
		t.Errorf("fanout counted %v key mismatches, want 3", n)
	}
	if n := metric(t, s.admins, `imstream_rejected_records_total{reason="epoch_ahead",stage="presence"}`); n != 1 {
		t.Errorf("presence counted %v epoch_ahead rejections, want 1", n)
	}

	// A server id poisoned before the epoch rule existed (its state holds
	// a huge epoch) is cleared with `imstream reset-server`.
	ctx := context.Background()
	srvKey := cfg.Redis.KeyPrefix + "srv:{im-8}"
	must(t, rc.HSet(ctx, srvKey, "epoch", strconv.FormatInt(math.MaxInt64/2, 10), "lease", "0").Err())
	announce := func() {
		now := time.Now().UnixMilli()
		up, sub := presence(schemas.TypeServerUp, "server:im-9", now, 0), presence(schemas.TypeSubscribe, "7:6", now, 6)
		for _, m := range []*kafka.Message{&up, &sub} {
			m.Value = []byte(strings.ReplaceAll(string(m.Value), `"im-9"`, `"im-8"`))
		}
		up.Key = []byte("server:im-8")
		testkit.Produce(t, cfg, up, sub)
		testkit.WaitCaughtUp(t, cfg, cfg.Presence.Group, cfg.Kafka.Topics.Presence, 30*time.Second)
	}
	announce()
	if on, _ := s.online(t, 6); on {
		t.Fatal("user 6 online on the poisoned server id; the test does not poison")
	}
	out, err := exec.Command(s.bin, "reset-server", "--server", "im-8", "--redis.addrs", cfg.Redis.Addrs[0]).CombinedOutput()
	if err != nil {
		t.Fatalf("reset-server: %v\n%s", err, out)
	}
	announce()
	testkit.Eventually(t, 10*time.Second, "user 6 online after reset-server and a new announcement", func() bool {
		on, _ := s.online(t, 6)
		return on
	})
}

// rss returns a process's resident set size in bytes.
func rss(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	must(t, err)
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// TestGatewayLimits opens 1 000 idle connections to a gateway that gives
// each its own server id (ip_port): the gateway's memory stays within
// 100 KB per connection and no deliver topic or consumer group is created
// for them; the connection over gateway.max_connections is closed at once
// and counted; with gateway.handshake_timeout a silent connection is closed;
// with gateway.allow_cidrs one from outside them (127.0.0.2) is closed and
// counted while one from inside (127.0.0.1) is served.
func TestGatewayLimits(t *testing.T) {
	const idle = 1000
	s, gw, run := gatewayStack(t, "--gateway.server_id", "ip_port", "--gateway.max_connections", strconv.Itoa(idle))
	p := run()
	gwAdmin := adminOf(p)
	time.Sleep(time.Second)
	before := rss(t, p.Cmd.Process.Pid)
	goroutines := metric(t, []string{gwAdmin}, "go_goroutines")
	conns := make([]net.Conn, 0, idle)
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	for i := 0; i < idle; i++ {
		c, err := net.Dial("tcp", gw)
		must(t, err)
		conns = append(conns, c)
	}
	testkit.Eventually(t, 10*time.Second, "every connection accepted", func() bool {
		return metric(t, []string{gwAdmin}, "go_goroutines") >= goroutines+idle
	})
	time.Sleep(2 * time.Second)
	after := rss(t, p.Cmd.Process.Pid)
	per := (after - before) / idle
	t.Logf("gateway RSS %d KiB → %d KiB with %d idle connections: %d bytes each", before>>10, after>>10, idle, per)
	if per > 100<<10 {
		t.Errorf("%d bytes of RSS per idle connection, want ≤ 100 KB", per)
	}

	extra, err := net.Dial("tcp", gw)
	must(t, err)
	_ = extra.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := extra.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("connection over gateway.max_connections: read %v, want EOF (closed by the gateway)", err)
	}
	extra.Close()
	if n := metric(t, []string{gwAdmin}, `imstream_gateway_refused_connections_total{reason="max_connections"}`); n != 1 {
		t.Errorf("refused connections counted %v, want 1", n)
	}
	md, err := kafkax.MustConn(s.cfg.Kafka).Client().Metadata(context.Background(), &kafka.MetadataRequest{})
	must(t, err)
	for _, tp := range md.Topics {
		if strings.HasPrefix(tp.Name, s.cfg.Kafka.Topics.DeliverPrefix) {
			t.Errorf("deliver topic %s created for an idle connection", tp.Name)
		}
	}
	for _, c := range conns {
		c.Close()
	}
	conns = nil

	// A gateway with a handshake timeout closes a connection that stays silent.
	_, gw2, run2 := gatewayStack(t, "--gateway.handshake_timeout", "500ms")
	run2()
	c, err := net.Dial("tcp", gw2)
	must(t, err)
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second)) // a deadline, not an assertion: EOF means the gateway closed it
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("silent connection: read %v, want EOF (closed by the handshake timeout)", err)
	}

	// A gateway with gateway.allow_cidrs 127.0.0.1/32: a connection from
	// 127.0.0.2 is closed before anything is read, and counted; one from
	// 127.0.0.1 is served.
	s3, gw3, run3 := gatewayStack(t, "--gateway.allow_cidrs", "127.0.0.1/32")
	admin3 := adminOf(run3())
	const notAllowed = `imstream_gateway_refused_connections_total{reason="not_allowed"}`
	from2 := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
	c3, err := from2.Dial("tcp", gw3)
	must(t, err)
	defer c3.Close()
	_, _ = c3.Write(imr.AppendFrame(nil, imr.Frame{Cmd: imr.CmdSubscribe, Body: sub(app, 777, 1)}))
	_ = c3.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c3.Read(make([]byte, 1)); err == nil {
		t.Errorf("connection from 127.0.0.2, outside gateway.allow_cidrs: served")
	}
	testkit.Eventually(t, 10*time.Second, "the refusal counted", func() bool {
		return metric(t, []string{admin3}, notAllowed) == 1
	})
	s3.connectUser(context.Background(), gw3, "127.0.0.1", 778) // served: its user comes online
	if on, _ := s3.online(t, 777); on {
		t.Errorf("the refused connection's user is online")
	}
	if n := metric(t, []string{admin3}, notAllowed); n != 1 {
		t.Errorf("refusals counted %v, want 1 (the allowed connection is not one)", n)
	}
}

// TestBoundedShutdown stops every role, and a gateway with an IM server
// sending to it, after the broker went away: each exits within
// shutdown.grace (plus process start-up slack), as it must under an
// orchestrator that SIGKILLs after its own grace period.
func TestBoundedShutdown(t *testing.T) {
	s, gw, run := gatewayStack(t, "--shutdown.grace", "2s")
	gp := run()
	c, err := loadgen.Dial(context.Background(), gw, "")
	must(t, err)
	defer c.Close()
	for i := 0; i < 100; i++ {
		must(t, c.Send(imr.CmdSubscribe, sub(app, int64(i+1), 1)))
	}
	must(t, c.Flush())
	testkit.Eventually(t, 30*time.Second, "the gateway's users online", func() bool {
		on, _ := s.online(t, 100)
		return on
	})
	s.kafka.Close()
	time.Sleep(500 * time.Millisecond)
	for i := 0; i < 100; i++ { // queued in the gateway, never produced
		_ = c.Send(imr.CmdSubscribe, sub(app, int64(1000+i), 1))
	}
	_ = c.Flush()
	time.Sleep(500 * time.Millisecond)
	procs := map[string]*testkit.Process{"gateway": gp}
	for role, p := range s.procs {
		procs[role] = p
	}
	start := time.Now()
	for _, p := range procs {
		p.Signal(syscall.SIGTERM)
	}
	for role, p := range procs {
		testkit.Eventually(t, 8*time.Second, role+" to exit after SIGTERM with the broker gone", p.Exited)
	}
	t.Logf("every process exited %s after SIGTERM (grace 2s)", time.Since(start).Round(10*time.Millisecond))
}

// TestGatewayTwoServersOneHost: two IM server processes behind one address
// with the default gateway.server_id. Each is its own server in presence,
// neither closes the other, deliveries reach the right one, and a burst the
// first is sending while the second connects arrives whole.
func TestGatewayTwoServersOneHost(t *testing.T) {
	s, gw, run := gatewayStack(t)
	run()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rc := testkit.RedisClient(t, s.cfg.Redis.Addrs[0])
	a := s.connectUser(ctx, gw, "127.0.0.4", 1)
	const burst = 2000
	sent := make(chan error, 1)
	go func() {
		for i := 0; i < burst; i++ {
			in := inner(schemas.Message{Cmd: 4, Version: 2, Sender: 1, Receiver: 500, Content: "burst-" + strconv.Itoa(i)})
			if err := a.Send(imr.CmdPush, imr.AppendPush(nil, imr.Push{AppID: app, Receivers: []int64{500}, Inner: in})); err != nil {
				sent <- err
				return
			}
		}
		sent <- a.Flush()
	}()
	b, err := loadgen.Dial(ctx, gw, "127.0.0.4")
	must(t, err)
	defer b.Close()
	must(t, b.Send(imr.CmdSubscribe, sub(app, 2, 1)))
	must(t, b.Flush())
	must(t, <-sent)
	testkit.Eventually(t, 30*time.Second, "both servers' users online, on two servers", func() bool {
		on1, s1 := s.online(t, 1)
		on2, s2 := s.online(t, 2)
		return on1 && on2 && fmt.Sprint(s1) == "[imr-127.0.0.4]" && fmt.Sprint(s2) == "[imr-127.0.0.4-2]"
	})
	rt := func(from, to int64, content string) []byte {
		return route(app, to, 1, inner(schemas.Message{Cmd: 17, Sender: from, Receiver: to, Content: content}))
	}
	toB, toA := rt(1, 2, "a-to-b"), rt(2, 1, "b-to-a")
	must(t, a.Send(imr.CmdPublish, toB))
	must(t, b.Send(imr.CmdPublish, toA))
	must(t, a.Flush())
	must(t, b.Flush())
	gotA, gotB := drain(a, 3*time.Second), drain(b, time.Second)
	if want := frameSet([]imr.Frame{{Cmd: imr.CmdPublish, Body: toA}}); fmt.Sprint(frameSet(gotA)) != fmt.Sprint(want) {
		t.Errorf("a received %d frames, want only b's RT", len(gotA))
	}
	if want := frameSet([]imr.Frame{{Cmd: imr.CmdPublish, Body: toB}}); fmt.Sprint(frameSet(gotB)) != fmt.Sprint(want) {
		t.Errorf("b received %d frames, want only a's RT", len(gotB))
	}
	testkit.Eventually(t, 30*time.Second, "a's whole burst in push_queue", func() bool {
		n, _ := rc.LLen(ctx, "push_queue").Result()
		return n >= burst
	})
	time.Sleep(500 * time.Millisecond)
	if n, _ := rc.LLen(ctx, "push_queue").Result(); n != burst {
		t.Errorf("%d push entries, want %d", n, burst)
	}
}
