package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/imstream/imstream/ingest"
	"github.com/imstream/imstream/internal/plumbing/kafkax"
	"github.com/imstream/imstream/internal/tools/testkit"
	"github.com/imstream/imstream/schemas"
)

// TestFairShareQuota: app 8 floods offline peer messages far above its
// quota while app 7 (app) sends to an online user. App 8 is held back and
// drained from the spill topic: each of its messages reaches its push
// list exactly once, in each receiver's order, and never faster than its
// quota allows; app 7 is never held and loses nothing.
func TestFairShareQuota(t *testing.T) { fairShareFlood(t, "online", false) }

// TestFairShareQuotaBulk: the same with app 8's flood as MSG_PUSH on the
// bulk lane, whose quota bucket is its own.
func TestFairShareQuotaBulk(t *testing.T) { fairShareFlood(t, "bulk", false) }

// TestFairShareRedisFull: the same while Redis refuses every write for a
// while once app 8 is held: the held marks written after the batches fail,
// so the fanout reads those partitions again from the first batch whose
// spill failed, and still every message reaches its push list once, in
// order.
func TestFairShareRedisFull(t *testing.T) { fairShareFlood(t, "online", true) }

func fairShareFlood(t *testing.T, lane string, redisFull bool) {
	const (
		noisy     = 8
		quota     = 200 // events/s
		flood     = 1200
		receivers = 12
		quiet     = 100
	)
	s := startStack(t, 1, 1, "--fanout.fair_share.enabled", "--fanout.fair_share.quotas", fmt.Sprintf("%d=%d", noisy, quota))
	cfg := s.cfg
	ctx := context.Background()
	srvA, srvB := imServer(t, cfg, "sa", 1), imServer(t, cfg, "sb", 1)
	must(t, srvB.Subscribe(ctx, app, 1, true))
	testkit.Eventually(t, 60*time.Second, "user 1 online", func() bool {
		on, _ := s.online(t, 1)
		return on
	})

	// The flood is written in one call, 1200 records at once: far above the
	// quota however slow the machine (one Publish at a time was not, on a
	// machine busy with another test run).
	enc := ingest.NewEncoder("sa", 1, ingest.Topics{Presence: cfg.Kafka.Topics.Presence, Publish: cfg.Kafka.Topics.Publish, Bulk: cfg.Kafka.Topics.Bulk})
	recs := make([]kafkaMessage, 0, flood)
	for i := 0; i < flood; i++ {
		to := int64(1000 + i%receivers)
		msg := schemas.Message{Cmd: schemas.CmdIM, Sender: 1, Receiver: to, Content: fmt.Sprintf("n-%d-%d", to, i/receivers)}
		r := enc.Publish(noisy, to, msg, ingest.Meta{})
		if lane == "bulk" {
			r = enc.Push(noisy, []int64{to}, msg)
		}
		recs = append(recs, r.Message())
	}
	// One record of app 8 that is not an event, in the middle of the
	// flood: held by its key like the others, the drainer reads it back and
	// dead-letters it (before its drained mark passes it).
	bad := kafkaMessage{Topic: recs[0].Topic, Key: []byte(fmt.Sprintf("%d:1005", noisy)), Value: []byte(`{"v":1,"type":"publish","appid":`)}
	recs = append(recs[:flood/2:flood/2], append([]kafkaMessage{bad}, recs[flood/2:]...)...)
	start := time.Now()
	rc := testkit.RedisClient(t, cfg.Redis.Addrs[0])
	if redisFull {
		// Half the flood; once app 8 is held, Redis refuses writes and
		// the other half comes, whose held marks cannot be raised.
		testkit.Produce(t, cfg, recs[:flood/2]...)
		testkit.Eventually(t, 60*time.Second, "app 8 held", func() bool {
			return metric(t, s.fanout, fmt.Sprintf(`imstream_app_events_total{app="%d",lane="%s",path="held"}`, noisy, lane)) > 0
		})
		must(t, rc.ConfigSet(ctx, "maxmemory-policy", "noeviction").Err())
		must(t, rc.ConfigSet(ctx, "maxmemory", "1").Err())
		testkit.Produce(t, cfg, recs[flood/2:]...)
		testkit.Eventually(t, 60*time.Second, "a spill failed after its batch was routed", func() bool {
			b, _ := os.ReadFile(s.procs["fanout"].Log)
			return bytes.Contains(b, []byte("reading the partition again from it"))
		})
		must(t, rc.ConfigSet(ctx, "maxmemory", "0").Err())
	} else {
		testkit.Produce(t, cfg, recs...)
	}
	for i := 0; i < quiet; i++ {
		msg := schemas.Message{Cmd: schemas.CmdIM, Flag: schemas.FlagUnpersistent, Sender: 2, Receiver: 1, Content: fmt.Sprintf("q-%d", i)}
		must(t, srvA.Publish(ctx, app, 1, msg, ingest.Meta{}))
	}

	testkit.Eventually(t, 120*time.Second, "every noisy message in a push list", func() bool {
		return rc.LLen(ctx, "push_queue").Val() >= flood
	})
	took := time.Since(start)
	testkit.WaitCaughtUp(t, cfg, cfg.Fanout.Group+"-spill", cfg.Kafka.Topics.Spill, 60*time.Second)
	testkit.WaitCaughtUp(t, cfg, cfg.Pusher.Group, cfg.Kafka.Topics.Push, 60*time.Second)

	// Exactly once, in each receiver's order.
	next := map[int64]int{}
	for _, e := range rc.LRange(ctx, "push_queue", 0, -1).Val() {
		var entry struct {
			AppID    int64  `json:"appid"`
			Receiver int64  `json:"receiver"`
			Content  string `json:"content"`
		}
		must(t, json.Unmarshal([]byte(e), &entry))
		parts := strings.Split(entry.Content, "-")
		seq, _ := strconv.Atoi(parts[len(parts)-1])
		if entry.AppID != noisy || seq != next[entry.Receiver] {
			t.Fatalf("entry %s: want app %d, seq %d for receiver %d", e, noisy, next[entry.Receiver], entry.Receiver)
		}
		next[entry.Receiver]++
	}
	for to := int64(1000); to < 1000+receivers; to++ {
		if next[to] != flood/receivers {
			t.Errorf("receiver %d: %d entries, want %d", to, next[to], flood/receivers)
		}
	}

	if redisFull { // batches read again count again below; the sinks above are what counts
		return
	}
	// The bad record was held, read back and dead-lettered by the drainer.
	letters := 0
	for _, m := range testkit.ReadAll(t, cfg, cfg.Kafka.Topics.DLQ) {
		if string(m.Key) == string(bad.Key) && string(m.Value) == string(bad.Value) {
			letters++
		}
	}
	if letters != 1 {
		t.Errorf("the held record that is not an event: %d dead letters, want 1", letters)
	}
	// Held back, then drained: every event once, by one path or the other.
	held := metric(t, s.fanout, fmt.Sprintf(`imstream_app_events_total{app="%d",lane="%s",path="held"}`, noisy, lane))
	drained := metric(t, s.fanout, fmt.Sprintf(`imstream_app_events_total{app="%d",lane="%s",path="drained"}`, noisy, lane))
	routed := metric(t, s.fanout, fmt.Sprintf(`imstream_app_events_total{app="%d",lane="%s",path="routed"}`, noisy, lane))
	if held == 0 || drained != held-1 || routed+drained != flood {
		t.Errorf("app %d: routed %v, held %v, drained %v; want held > 0, drained = held - 1 (the bad record), routed + drained = %d", noisy, routed, held, drained, flood)
	}
	// Fair share's Redis calls are observed like the stores'.
	for _, op := range []string{"spill_hold", "spill_drain", "spill_marks", "quota_take"} {
		if n := metric(t, s.fanout, fmt.Sprintf(`imstream_redis_call_duration_seconds_count{op="%s",stage="fanout"}`, op)); n == 0 {
			t.Errorf("imstream_redis_call_duration_seconds{op=%q}: no call observed", op)
		}
	}
	// The quota is a ceiling the shared token bucket keeps whatever the
	// machine's speed: one burst (1 s of quota), then the quota's rate.
	if least := time.Duration(float64(flood-quota) / quota * float64(time.Second)); took < least {
		t.Errorf("%d events routed in %s, faster than a quota of %d/s allows (%s)", flood, took, quota, least)
	}

	// App 7 was never held and every message reached its server.
	if v := metric(t, s.fanout, fmt.Sprintf(`imstream_app_events_total{app="%d",lane="online",path="held"}`, app)); v != 0 {
		t.Errorf("app %d held %v times", app, v)
	}
	testkit.Eventually(t, 60*time.Second, "app 7's deliveries", func() bool {
		return len(testkit.ReadAll(t, cfg, cfg.Kafka.Topics.DeliverPrefix+"sb")) >= quiet
	})
	if got := len(testkit.ReadAll(t, cfg, cfg.Kafka.Topics.DeliverPrefix+"sb")); got != quiet {
		t.Errorf("app %d: %d deliveries, want %d", app, got, quiet)
	}
}

// TestFairShareHeldRangeGone: an operator deletes and re-creates the lane
// topic while app 8's held records wait to be drained. Those records are
// gone with the old log: the drainer says so (an ERROR line,
// imstream_fair_share_lost_offsets_total{reason="log_restarted"}) instead
// of routing other records found at those offsets, releases the app, and
// app 8's messages on the new log land, each once.
func TestFairShareHeldRangeGone(t *testing.T) {
	const noisy, quota, flood = 8, 50, 600
	s := startStack(t, 1, 1, "--fanout.fair_share.enabled", "--fanout.fair_share.quotas", fmt.Sprintf("%d=%d", noisy, quota))
	cfg := s.cfg
	ctx := context.Background()
	enc := ingest.NewEncoder("sa", 1, ingest.Topics{Presence: cfg.Kafka.Topics.Presence, Publish: cfg.Kafka.Topics.Publish, Bulk: cfg.Kafka.Topics.Bulk})
	batch := func(run string, n int) []kafkaMessage {
		var recs []kafkaMessage
		for i := 0; i < n; i++ {
			to := int64(1000 + i%10)
			recs = append(recs, enc.Publish(noisy, to, schemas.Message{Cmd: schemas.CmdIM, Sender: 1, Receiver: to, Content: fmt.Sprintf("%s-%d", run, i)}, ingest.Meta{}).Message())
		}
		return recs
	}
	// Two waves, held in separate references: the drainer reads the
	// first's range while it is there and routes it at the quota (12 s);
	// the second's range is gone before it comes to it.
	testkit.Produce(t, cfg, batch("old", flood)...)
	held := func() float64 {
		return metric(t, s.fanout, fmt.Sprintf(`imstream_app_events_total{app="%d",lane="online",path="held"}`, noisy))
	}
	testkit.Eventually(t, 60*time.Second, "app 8 held", func() bool { return held() > 0 })
	first := held()
	testkit.Produce(t, cfg, batch("second", flood)...)
	testkit.Eventually(t, 60*time.Second, "app 8's second wave held", func() bool { return held() >= first+flood })
	conn := kafkax.MustConn(cfg.Kafka)
	// The roles' metadata requests may re-create it first, with the
	// broker's default partition count: the new partitions are consumed
	// too (the consumer group watches partition counts).
	must(t, deleteTopic(ctx, cfg.Kafka.Brokers, cfg.Kafka.Topics.Publish))
	time.Sleep(500 * time.Millisecond)
	must(t, conn.EnsureTopics(ctx, 1, map[string]int{cfg.Kafka.Topics.Publish: cfg.Kafka.Partitions}))
	testkit.Produce(t, cfg, batch("new", 100)...)

	testkit.Eventually(t, 120*time.Second, "the lost range counted", func() bool {
		return metric(t, s.fanout, `imstream_fair_share_lost_offsets_total{reason="log_restarted"}`) > 0
	})
	b, err := os.ReadFile(s.procs["fanout"].Log)
	must(t, err)
	if !bytes.Contains(b, []byte("held records are gone from their lane partition")) {
		t.Error("no ERROR line names the lost range")
	}
	rc := testkit.RedisClient(t, cfg.Redis.Addrs[0])
	testkit.Eventually(t, 120*time.Second, "app 8's messages on the new log in push lists", func() bool {
		n := 0
		for _, e := range rc.LRange(ctx, "push_queue", 0, -1).Val() {
			if strings.HasPrefix(pushContent(t, e), "new-") {
				n++
			}
		}
		return n >= 100
	})
	testkit.WaitCaughtUp(t, cfg, cfg.Fanout.Group+"-spill", cfg.Kafka.Topics.Spill, 60*time.Second)
	seen := map[string]int{}
	for _, e := range rc.LRange(ctx, "push_queue", 0, -1).Val() {
		seen[pushContent(t, e)]++
	}
	for c, n := range seen {
		if n != 1 {
			t.Errorf("%s landed %d times", c, n)
		}
	}
	for i := 0; i < 100; i++ {
		if c := fmt.Sprintf("new-%d", i); seen[c] != 1 {
			t.Errorf("%s: landed %d times, want once", c, seen[c])
		}
	}
}

// TestFairShareDrainsCopies: a spill topic holding copies of held events,
// as fanouts wrote them before references (an upgrade with a backlog),
// is drained as before: each copy routed once with the src of the record
// it was held back from, a copy written twice skipped.
func TestFairShareDrainsCopies(t *testing.T) {
	const noisy = 8
	s := startStack(t, 1, 1, "--fanout.fair_share.enabled", "--fanout.fair_share.quotas", fmt.Sprintf("%d=%d", noisy, 1000))
	cfg := s.cfg
	ctx := context.Background()
	enc := ingest.NewEncoder("sa", 1, ingest.Topics{Presence: cfg.Kafka.Topics.Presence, Publish: cfg.Kafka.Topics.Publish, Bulk: cfg.Kafka.Topics.Bulk})
	var copies []kafkaMessage
	for i := 0; i < 20; i++ {
		m := enc.Publish(noisy, 1000, schemas.Message{Cmd: schemas.CmdIM, Sender: 1, Receiver: 1000, Content: fmt.Sprintf("copy-%d", i)}, ingest.Meta{}).Message()
		m.Topic = cfg.Kafka.Topics.Spill
		m.Headers = append(m.Headers,
			kafkaHeader{Key: "origin_topic", Value: []byte(cfg.Kafka.Topics.Publish)},
			kafkaHeader{Key: "origin_partition", Value: []byte("0")},
			kafkaHeader{Key: "origin_offset", Value: []byte(strconv.Itoa(100 + i))},
			kafkaHeader{Key: "origin_inc", Value: []byte("f1")})
		copies = append(copies, m)
	}
	testkit.Produce(t, cfg, copies...)
	testkit.Produce(t, cfg, copies[10:]...) // spilled again by a fanout that crashed before committing
	rc := testkit.RedisClient(t, cfg.Redis.Addrs[0])
	testkit.Eventually(t, 60*time.Second, "the copies in the push list", func() bool {
		return rc.LLen(ctx, "push_queue").Val() >= 20
	})
	testkit.WaitCaughtUp(t, cfg, cfg.Fanout.Group+"-spill", cfg.Kafka.Topics.Spill, 60*time.Second)
	testkit.WaitCaughtUp(t, cfg, cfg.Pusher.Group, cfg.Kafka.Topics.Push, 60*time.Second)
	var got []string
	for _, e := range rc.LRange(ctx, "push_queue", 0, -1).Val() {
		got = append(got, pushContent(t, e))
	}
	var want []string
	for i := 0; i < 20; i++ {
		want = append(want, fmt.Sprintf("copy-%d", i))
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("push list %v, want %v", got, want)
	}
	if n := metric(t, s.fanout, `imstream_skipped_total{reason="spill_repeat",stage="fanout"}`); n != 10 {
		t.Errorf("spill_repeat %v, want 10", n)
	}
}
