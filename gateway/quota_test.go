package gateway

import (
	"context"
	"errors"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/imstream/imstream/gateway/imr"
	"github.com/imstream/imstream/internal/plumbing/config"
	"github.com/imstream/imstream/internal/plumbing/kafkax"
	"github.com/imstream/imstream/internal/plumbing/stage"
	"github.com/imstream/imstream/internal/tools/embedded"
	"github.com/imstream/imstream/internal/tools/testkit"
	"github.com/imstream/imstream/schemas"
)

// fakeClock is a clock the test moves.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// TestLimiter: an app passes its quota a second (times scale) after a
// burst's worth, per lane; an app without a quota is never held; a reload
// changes the rate and keeps the tokens.
func TestLimiter(t *testing.T) {
	clock := &fakeClock{now: time.Unix(1_000_000, 0)}
	fs := config.Default().Fanout.FairShare
	fs.Quotas = map[string]int{"7": 100}
	fs.Burst = 500 * time.Millisecond
	l := newLimiter(fs, 1, clock.Now)
	online, bulk := laneKey{7, false}, laneKey{7, true}

	got, wait := l.take(online, 1000)
	if got != 50 || wait != 10*time.Millisecond {
		t.Fatalf("a new bucket gave %d tokens (wait %s), want its burst, 50 (wait 10ms)", got, wait)
	}
	// Ten simulated seconds, asking for more than the quota every 7 ms.
	passed, elapsed := 0, 0
	for ; elapsed+7 <= 10_000; elapsed += 7 {
		clock.Add(7 * time.Millisecond)
		n, _ := l.take(online, 5)
		passed += n
	}
	if want := 100 * elapsed / 1000; passed < want-1 || passed > want+1 {
		t.Errorf("passed %d events in %d ms at 100/s, want %d", passed, elapsed, want)
	}
	if got, _ := l.take(bulk, 1000); got != 50 {
		t.Errorf("the bulk lane's bucket gave %d, want its own burst, 50", got)
	}
	if got, wait := l.take(laneKey{8, false}, 1_000_000); got != 1_000_000 || wait != 0 {
		t.Errorf("an app without a quota got %d of 1000000 (wait %s)", got, wait)
	}

	fs.Quotas = map[string]int{"7": 1000}
	l.setConfig(fs)
	clock.Add(100 * time.Millisecond)
	if got, _ := l.take(online, 1000); got < 99 || got > 101 {
		t.Errorf("after a reload to 1000/s, 100 ms gave %d tokens, want 100", got)
	}
	half := newLimiter(fs, 0.5, clock.Now)
	if got, _ := half.take(online, 1000); got != 250 {
		t.Errorf("scale 0.5: a new bucket gave %d, want half the burst, 250", got)
	}
	clock.Add(time.Minute)
	l.take(laneKey{9, false}, 1) // sweeps: 7's buckets are full again
	if n := len(l.buckets); n != 0 {
		t.Errorf("%d buckets kept after they refilled, want none", n)
	}
}

// quotaGateway is a gateway applying quotas (app 7: 100/s, a burst of
// 5) on a clock the test moves, on a broker with one partition per
// topic, and an IM server connected to it over a pipe. kafkaDown: the
// broker refuses every produce, the queues hold 6 events (app 7's burst
// fits, what it holds does not) and a closed connection gives up after
// half a second.
func quotaGateway(t *testing.T, maxHeld int, kafkaDown bool) (*Gateway, config.Config, *fakeClock, net.Conn, func()) {
	t.Helper()
	k := testkit.Kafka(t, embedded.KafkaOptions{})
	cfg := config.Default()
	cfg.Kafka.Brokers = []string{k.Addr}
	cfg.Gateway.HeartbeatInterval = time.Hour
	cfg.Gateway.Quotas = config.GatewayQuotas{Enabled: true, Scale: 1, MaxHeld: maxHeld}
	cfg.Fanout.FairShare.Quotas = map[string]int{"7": 100}
	cfg.Fanout.FairShare.Burst = 50 * time.Millisecond
	if kafkaDown {
		cfg.Gateway.QueueSize = 6
	}
	g, err := New(cfg.Gateway, cfg.Fanout.FairShare, testkit.StageEnvOn(cfg))
	if err != nil {
		t.Fatal(err)
	}
	clock := &fakeClock{now: time.Unix(1_000_000, 0)}
	g.limit.now = clock.Now
	if err := kafkax.MustConn(cfg.Kafka).EnsureTopics(context.Background(), 1, map[string]int{
		cfg.Kafka.Topics.Presence: 1, cfg.Kafka.Topics.Publish: 1, cfg.Kafka.Topics.Bulk: 1}); err != nil {
		t.Fatal(err)
	}
	if kafkaDown {
		g.giveUp = 500 * time.Millisecond
		cl := k.Cluster()
		cl.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
			cl.KeepControl()
			return nil, errors.New("produce refused by the test"), true
		})
	}
	client, server := net.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	ended := make(chan struct{})
	go func() { defer close(ended); g.session(ctx, server, server) }()
	stop := func() {
		_ = client.Close()
		cancel()
		select {
		case <-ended:
		case <-time.After(30 * time.Second):
			t.Fatal("the session did not end")
		}
	}
	t.Cleanup(func() { _ = client.Close(); cancel() })
	return g, cfg, clock, client, stop
}

func publishFrame(app, msgid int64) []byte {
	in := imr.AppendInner(nil, schemas.Message{Cmd: schemas.CmdIM, Version: 2, Sender: 1, Receiver: 2, Content: "m" + strconv.FormatInt(msgid, 10)})
	return imr.AppendFrame(nil, imr.Frame{Cmd: imr.CmdPublish, Body: imr.AppendRoute(nil, imr.Route{AppID: app, Receiver: 2, MsgID: msgid, Inner: in})})
}

// published returns the msgids of app's publish events in the topic, in
// the topic's order.
func published(t *testing.T, cfg config.Config, app int64) []int64 {
	t.Helper()
	var out []int64
	for _, m := range testkit.ReadAll(t, cfg, cfg.Kafka.Topics.Publish) {
		ev, err := decode(m, schemas.KindPublish)
		if err != nil {
			t.Fatalf("a publish record that does not decode: %v", err)
		}
		if p, ok := ev.(*schemas.Publish); ok && p.AppID == app {
			out = append(out, p.MsgID)
		}
	}
	return out
}

func decode(m kafka.Message, kind schemas.Kind) (schemas.Event, error) {
	return schemas.DecodeKindFormat(m.Value, 1<<20, kind, stage.Format(&m))
}

func inOrder(ids []int64, n int) bool {
	if len(ids) != n {
		return false
	}
	for i, id := range ids {
		if id != int64(i+1) {
			return false
		}
	}
	return true
}

// TestQuotaHolds: an app over its quota is held in the gateway — its
// burst passes, the rest waits — while another app's events on the same
// connection go to Kafka at once; when its tokens come, the held events
// follow, in order, none lost.
func TestQuotaHolds(t *testing.T) {
	g, cfg, clock, im, stop := quotaGateway(t, 100_000, false)
	const n = 60
	go func() {
		for i := int64(1); i <= n; i++ {
			if _, err := im.Write(publishFrame(7, i)); err != nil {
				return
			}
			if _, err := im.Write(publishFrame(8, i)); err != nil {
				return
			}
		}
	}()
	testkit.Eventually(t, 30*time.Second, "app 8's events in Kafka", func() bool { return len(published(t, cfg, 8)) == n })
	if !inOrder(published(t, cfg, 8), n) {
		t.Fatalf("app 8 (no quota): %v", published(t, cfg, 8))
	}
	// The clock has not moved: app 7 passed its burst (5) and no more.
	testkit.Eventually(t, 10*time.Second, "app 7's excess held", func() bool {
		return testutil.ToFloat64(g.qm.holding) == n-5
	})
	if got := published(t, cfg, 7); !inOrder(got, 5) {
		t.Errorf("app 7 with a burst of 5 and no time passing: %v in Kafka, want 1..5", got)
	}
	if h := testutil.ToFloat64(g.qm.held.WithLabelValues("7", "online")); h != n-5 {
		t.Errorf("imstream_gateway_quota_held_total{app=7} = %v, want %d", h, n-5)
	}

	// Each 50 ms gives 5 tokens (the bucket's depth: more time gives no
	// more), and 5 more held events go.
	for want := 10; want <= n; want += 5 {
		clock.Add(50 * time.Millisecond)
		testkit.Eventually(t, 10*time.Second, "5 more of app 7's events", func() bool { return len(published(t, cfg, 7)) == want })
	}
	if got := published(t, cfg, 7); !inOrder(got, n) {
		t.Errorf("app 7 out of order: %v", got)
	}
	if h := testutil.ToFloat64(g.qm.holding); h != 0 {
		t.Errorf("holding %v after all were released", h)
	}
	stop()
	if lost := testutil.ToFloat64(g.env.Metrics.Skipped.WithLabelValues(Stage, "produce_failed")); lost != 0 {
		t.Errorf("%v events counted lost", lost)
	}
	if f := testutil.ToFloat64(g.qm.flushed); f != 0 {
		t.Errorf("%v events flushed at the end with nothing held", f)
	}
}

// TestQuotaMaxHeld: at gateway.quotas.max_held held events the gateway
// stops reading the connection that would hold more (the IM server's
// writes block) while another connection, within its quotas, goes on;
// when the connection ends, what it held goes to Kafka at once, in order,
// counted as flushed, before server_down.
func TestQuotaMaxHeld(t *testing.T) {
	const maxHeld, n = 10, 200
	g, cfg, _, im, stop := quotaGateway(t, maxHeld, false)
	var mu sync.Mutex
	written := 0
	go func() {
		for i := int64(1); i <= n; i++ {
			if _, err := im.Write(publishFrame(7, i)); err != nil {
				return
			}
			mu.Lock()
			written++
			mu.Unlock()
		}
	}()
	testkit.Eventually(t, 30*time.Second, "the connection paused", func() bool { return testutil.ToFloat64(g.qm.paused) == 1 })
	mu.Lock()
	w := written
	mu.Unlock()
	if h := testutil.ToFloat64(g.qm.holding); h != maxHeld || w >= n {
		t.Fatalf("paused with %v held and %d of %d frames written, want %d held and the writer blocked", h, w, n, maxHeld)
	}
	// Another IM server, whose app has no quota, holds nothing: it is read
	// and produced meanwhile.
	other, server2 := net.Pipe()
	ended2 := make(chan struct{})
	go func() { defer close(ended2); g.session(context.Background(), server2, server2) }()
	for i := int64(1); i <= 20; i++ {
		if _, err := other.Write(publishFrame(8, i)); err != nil {
			t.Fatal(err)
		}
	}
	testkit.Eventually(t, 30*time.Second, "the other connection's events in Kafka", func() bool { return inOrder(published(t, cfg, 8), 20) })
	_ = other.Close()
	select {
	case <-ended2:
	case <-time.After(30 * time.Second):
		t.Fatal("the other session did not end")
	}
	if p := testutil.ToFloat64(g.qm.paused); p != 1 {
		t.Errorf("paused %v times, want once: the first connection only", p)
	}

	// The clock never moves: only the connection's end releases them.
	_ = im.Close()
	stop()
	got := published(t, cfg, 7)
	read := testutil.ToFloat64(g.m.frames.WithLabelValues(strconv.Itoa(int(imr.CmdPublish)))) - 20 // app 7's: the other connection sent 20
	if !inOrder(got, int(read)) || len(got) < 5+maxHeld {
		t.Errorf("after the end: %d of app 7's events in Kafka of %v read (%v), want all read, in order", len(got), read, got)
	}
	if f := testutil.ToFloat64(g.qm.flushed); f != read-5 {
		t.Errorf("flushed %v, want every event read beyond the burst: %v", f, read-5)
	}
	if lost := testutil.ToFloat64(g.env.Metrics.Skipped.WithLabelValues(Stage, "produce_failed")); lost != 0 {
		t.Errorf("%v events counted lost", lost)
	}
	if q, h := g.Queued(), testutil.ToFloat64(g.qm.holding); q != 0 || h != 0 {
		t.Errorf("queued %d, holding %v after the session ended", q, h)
	}
	pres := testkit.ReadAll(t, cfg, cfg.Kafka.Topics.Presence)
	if ev, err := decode(pres[len(pres)-1], schemas.KindPresence); err != nil || ev.(*schemas.Presence).Type != schemas.TypeServerDown {
		t.Errorf("the last presence event is %v (%v), want server_down", ev, err)
	}
}

// TestQuotaKafkaDown: Kafka refuses every write while an app is held and
// its connection ends. The held events are flushed toward queues that
// never drain; once the give-up time has run out every event read is
// counted lost — the held ones, the queued ones, server_up and
// server_down — and nothing stays counted as queued or held.
func TestQuotaKafkaDown(t *testing.T) {
	const n = 20
	g, _, _, im, stop := quotaGateway(t, 100_000, true)
	go func() {
		for i := int64(1); i <= n; i++ {
			if _, err := im.Write(publishFrame(7, i)); err != nil {
				return
			}
		}
	}()
	testkit.Eventually(t, 30*time.Second, "app 7's excess held", func() bool { return testutil.ToFloat64(g.qm.holding) == n-5 })
	stop()
	lost := testutil.ToFloat64(g.env.Metrics.Skipped.WithLabelValues(Stage, "produce_failed"))
	if lost != n+2 {
		t.Errorf("%v events counted lost, want every event read: %d and server_up and server_down", lost, n)
	}
	if q, h := g.Queued(), testutil.ToFloat64(g.qm.holding); q != 0 || h != 0 {
		t.Errorf("queued %d, holding %v after the session ended", q, h)
	}
}
