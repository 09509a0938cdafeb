package fanout

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"

	"github.com/imstream/imstream/internal/plumbing/config"
	"github.com/imstream/imstream/internal/plumbing/stage"
	"github.com/imstream/imstream/schemas"
	"github.com/imstream/imstream/store"
)

// fairBatch is a batch of topic imr.publish partition 0 from offset first,
// one record per app in apps (keyed "<app>:<receiver>"), each written age
// before now.
func fairBatch(first int64, now time.Time, age time.Duration, apps ...int64) stage.Batch {
	b := stage.Batch{Topic: "imr.publish", Partition: 0, Inc: "r1"}
	for i, app := range apps {
		key := strconv.AppendInt(append(strconv.AppendInt(nil, app, 10), ':'), int64(1000+i), 10)
		b.Records = append(b.Records, kafka.Message{Topic: b.Topic, Partition: 0, Offset: first + int64(i), Time: now.Add(-age), Key: key})
	}
	return b
}

// frozen returns a time, a clock frozen at it, and a memory spill store on
// that clock.
func frozen() (time.Time, func() time.Time, *store.MemorySpill) {
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { return now }
	st := store.NewMemorySpill()
	st.Now = clock
	return now, clock, st
}

func newFair(st store.SpillStore, now func() time.Time, cfg config.FairShare) *fairShare {
	return &fairShare{store: st, now: now, m: newAppMetrics(cfg.TopApps, now), cfg: cfg,
		lane: func(string) string { return "online" }, state: map[partKey]*partState{}, drained: map[string]int64{},
		spillPos: map[partKey]int64{}}
}

// heldApps counts the records of b held back (skip), by app.
func heldApps(b stage.Batch, skip []bool) map[int64]int {
	out := map[int64]int{}
	for i, m := range b.Records {
		if skip != nil && skip[i] {
			out[keyApp(m.Key)]++
		}
	}
	return out
}

// TestFairShareHoldsTheAppAboveItsShare: on a saturated partition the app
// sending far more than half of two apps' records is held back from the
// moment a second app shows up, and stays held (every later record of it)
// until the drained mark reaches its held mark; the quiet app is never
// held, and nothing is held while the partition keeps up. A new owner of
// the partition reads the marks and goes on holding.
func TestFairShareHoldsTheAppAboveItsShare(t *testing.T) {
	ctx := context.Background()
	now, clock, st := frozen()
	cfg := config.Default().Fanout.FairShare
	cfg.SaturatedAfter = 250 * time.Millisecond
	fs := newFair(st, clock, cfg)

	// Keeping up: nothing is held whatever the mix.
	apps := []int64{8, 8, 8, 8, 7, 8, 8, 8, 8, 8}
	b := fairBatch(0, now, 0, apps...)
	why, err := fs.decideHeld(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	if h := heldApps(b, why); len(h) != 0 {
		t.Fatalf("held %v while the partition keeps up", h)
	}
	fs.done(b)

	// Saturated: app 8 is held from its first record on.
	b = fairBatch(10, now, time.Second, apps...)
	if why, err = fs.decideHeld(ctx, b); err != nil {
		t.Fatal(err)
	}
	if h := heldApps(b, why); h[7] != 0 || h[8] != 9 {
		t.Fatalf("held %v, want all 9 of app 8 and none of app 7", h)
	}
	fs.done(b)
	stream := store.SpillStream(8, "imr.publish", "r1", 0)
	held, drained, _ := st.Marks(ctx, []string{stream})
	if held[0] != 19 || drained[0] != -1 {
		t.Fatalf("marks held %d drained %d, want 19 and none", held[0], drained[0])
	}

	// No longer saturated, but not drained: app 8 stays held (its order).
	b = fairBatch(20, now, 0, 8, 7, 8)
	if why, err = fs.decideHeld(ctx, b); err != nil {
		t.Fatal(err)
	}
	if h := heldApps(b, why); h[8] != 2 || h[7] != 0 {
		t.Fatalf("held %v before the drainer caught up, want both of app 8", h)
	}
	fs.done(b)

	// A new owner of the partition (another process) holds it too.
	other := newFair(st, clock, cfg)
	b = fairBatch(23, now, 0, 8, 7)
	if why, err = other.decideHeld(ctx, b); err != nil {
		t.Fatal(err)
	}
	if h := heldApps(b, why); h[8] != 1 || h[7] != 0 {
		t.Fatalf("a new owner held %v, want app 8's", h)
	}
	other.done(b)

	// The held gauge counts the partition while app 8's held events wait,
	// and stops once they were drained, before any new event.
	other.m.label(8, 100) // app 8's volume: one of the top apps
	gauge := func() float64 {
		must(t, other.countHeld(ctx))
		return testutil.ToFloat64(other.m.heldG.WithLabelValues("8", HeldShare))
	}
	if g := gauge(); g != 1 {
		t.Fatalf("held gauge %v, want 1", g)
	}
	if err := st.Drain(ctx, map[string]int64{stream: 24}); err != nil {
		t.Fatal(err)
	}
	if g := gauge(); g != 0 {
		t.Fatalf("held gauge %v after the drain, want 0", g)
	}
	// Drained up to the held mark: recheck after the last read, the next
	// batch reads the marks in the background and still holds app 8.
	other.now = func() time.Time { return now.Add(recheck) }
	b = fairBatch(25, now, 0, 8, 7, 8)
	if why, err = other.decideHeld(ctx, b); err != nil {
		t.Fatal(err)
	}
	if h := heldApps(b, why); h[8] != 2 || h[7] != 0 {
		t.Fatalf("held %v while the marks are read in the background, want both of app 8", h)
	}
	other.done(b)
	ps := other.state[partKey{b.Topic, b.Partition}]
	if ps.reading == nil {
		t.Fatal("no read of the held app's marks under way after recheck")
	}
	<-ps.reading.done
	// The drainer catches up with those two as well; the next batch finds
	// the read caught up, reads the marks again at once, and routes app 8.
	if err := st.Drain(ctx, map[string]int64{stream: 27}); err != nil {
		t.Fatal(err)
	}
	b = fairBatch(28, now, 0, 8, 7, 8)
	if why, err = other.decideHeld(ctx, b); err != nil {
		t.Fatal(err)
	}
	if h := heldApps(b, why); len(h) != 0 {
		t.Fatalf("held %v after the drainer caught up", h)
	}
}

// TestFairShareQuota: an app with a quota gets one burst of tokens, then
// the quota's rate, shared by the lanes' decisions and the drainer's debt.
func TestFairShareQuota(t *testing.T) {
	ctx := context.Background()
	now, clock, st := frozen()
	cfg := config.Default().Fanout.FairShare
	cfg.Quotas = map[string]int{"8": 10}
	fs := newFair(st, clock, cfg)

	apps := make([]int64, 30)
	for i := range apps {
		apps[i] = 8
	}
	b := fairBatch(0, now, 0, apps...)
	why, err := fs.decideHeld(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	for i, w := range why {
		if want := i >= 10; w != want {
			t.Fatalf("record %d: held %v; want the first 10 (one burst) routed, the rest held for the quota", i, w)
		}
	}
	// The drainer routes the 20 held: 20 tokens of debt, 2 s at 10/s.
	wait, err := fs.reserve(ctx, map[appLane]int{{8, "online"}: 20})
	if err != nil || wait != 2*time.Second {
		t.Fatalf("drain wait %s (%v), want 2s", wait, err)
	}
	// An app without a quota never waits.
	if wait, _ := fs.reserve(ctx, map[appLane]int{{7, "online"}: 1000}); wait != 0 {
		t.Fatalf("app without a quota waits %s", wait)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestSpillPartition: one app's held events of one source partition share
// a spill partition (their order is kept); a flooding app's, held on 12
// source partitions, spread over 12 spill partitions; the balancer puts a
// spill record where SpillPartition says, from its key and
// origin_partition header.
func TestSpillPartition(t *testing.T) {
	const n = 12
	used := map[int]bool{}
	for p := range n {
		used[SpillPartition(8, p, n)] = true
	}
	if len(used) != n {
		t.Errorf("app 8 held on %d source partitions uses %d spill partitions, want %d", n, len(used), n)
	}
	parts := make([]int, n)
	for i := range parts {
		parts[i] = i
	}
	b := &OutputBalancer{PushTopic: "imr.push", SpillTopic: "imr.publish.spill"}
	for p := range n {
		ref := spillRef{App: 8, Topic: "imr.publish", Partition: p, Inc: "r1", From: 42, To: 42, Held: 1}
		rec := ref.record("imr.publish.spill")
		if got, want := b.Balance(rec, parts...), SpillPartition(8, p, n); got != want {
			t.Errorf("source partition %d: balanced to %d, want %d", p, got, want)
		}
		if again := b.Balance(ref.record("imr.publish.spill"), parts...); again != b.Balance(rec, parts...) {
			t.Errorf("source partition %d: balanced differently twice", p)
		}
	}
}

// decideHeld is decide with the held marks raised when it returns; it
// returns which records were held back.
func (fs *fairShare) decideHeld(ctx context.Context, b stage.Batch) ([]bool, error) {
	h, err := fs.decide(ctx, b)
	if err == nil && h.marks != nil {
		err = fs.store.Hold(ctx, h.marks)
	}
	if h.skip == nil {
		h.skip = make([]bool, len(b.Records))
	}
	return h.skip, err
}

// BenchmarkFairShareWithinQuota: fair share's work per event (decide, with
// its quota tokens, and done) for batches of 500 events of 10 apps, every
// app within its quota: what fair share costs a fanout that never holds
// anything back.
func BenchmarkFairShareWithinQuota(b *testing.B) {
	ctx := context.Background()
	now, _, st := frozen()
	cfg := config.Default().Fanout.FairShare
	cfg.DefaultQuota = 1 << 30
	clock := now
	fs := newFair(st, func() time.Time { return clock }, cfg)
	st.Now = fs.now
	apps := make([]int64, 500)
	for i := range apps {
		apps[i] = int64(i % 10)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		clock = clock.Add(time.Millisecond)
		batch := fairBatch(int64(i*500), clock, 0, apps...)
		b.StartTimer()
		if _, err := fs.decide(ctx, batch); err != nil {
			b.Fatal(err)
		}
		fs.done(batch)
	}
}

// BenchmarkFairShareSkipHeld: the lane's work per record of an app held
// back (fanout.route before any output: decide, from the record keys, and
// the decoding of what is not held — nothing), for batches of 500 records
// of one flooding app, reported as records/s on one core; beside it, in
// the same run, the decoding alone of the same records, which every held
// record cost before references (it was decoded, then copied).
func BenchmarkFairShareSkipHeld(b *testing.B) {
	ctx := context.Background()
	now, _, st := frozen()
	cfg := config.Default().Fanout.FairShare
	cfg.Quotas = map[string]int{"8": 1}
	apps := make([]int64, 500)
	for i := range apps {
		apps[i] = 8
	}
	batch := fairBatch(0, now, 0, apps...)
	for j := range batch.Records {
		ev := schemas.Publish{Header: schemas.Header{V: 1, Type: schemas.TypePublish, Server: "s1", AppID: 8, TS: now.UnixMilli()}, Receiver: int64(1000 + j),
			Msg: schemas.Message{Cmd: schemas.CmdIM, Sender: 1, Receiver: int64(1000 + j), Content: "flood " + strconv.Itoa(j)}}
		batch.Records[j].Value = ev.AppendJSON(nil)
	}
	dec := stage.Decoder{MaxBytes: 64 << 10, AcceptKeyMismatch: true}
	b.Run("skipped", func(b *testing.B) {
		clock := now
		fs := newFair(st, func() time.Time { return clock }, cfg)
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			for j := range batch.Records {
				batch.Records[j].Offset = int64(i*500 + j)
			}
			h, err := fs.decide(ctx, batch)
			if err != nil {
				b.Fatal(err)
			}
			if i > 0 && len(h.refs) != 1 { // the first batch routes the burst
				b.Fatalf("batch %d: %d references, want 1", i, len(h.refs))
			}
			if d, _ := stage.DecodeSome[*schemas.Publish](batch.Records, dec, schemas.KindPublish, h.skip); len(d) != 0 && i > 0 {
				b.Fatalf("%d records of a held app decoded", len(d))
			}
			fs.done(batch)
		}
		b.ReportMetric(float64(b.N*500)/b.Elapsed().Seconds(), "records/s")
	})
	b.Run("decoded", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if d, bad := stage.DecodeBatch[*schemas.Publish](batch.Records, dec, schemas.KindPublish); len(d) != 500 {
				b.Fatalf("%d decoded, %v", len(d), bad)
			}
		}
		b.ReportMetric(float64(b.N*500)/b.Elapsed().Seconds(), "records/s")
	})
}
