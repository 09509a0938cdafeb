package fanout

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/segmentio/kafka-go"

	"github.com/imstream/imstream/internal/plumbing/kafkax"
	"github.com/imstream/imstream/internal/tools/embedded"
	"github.com/imstream/imstream/internal/tools/testkit"
	"github.com/imstream/imstream/store"
)

// failingHold is a SpillStore whose Hold fails while fail is set.
type failingHold struct {
	store.SpillStore
	mu   sync.Mutex
	fail bool
}

func (f *failingHold) failing(on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = on
}

func (f *failingHold) Hold(ctx context.Context, held map[string]int64) error {
	f.mu.Lock()
	fail := f.fail
	f.mu.Unlock()
	if fail {
		return errors.New("injected Hold failure")
	}
	return f.SpillStore.Hold(ctx, held)
}

// The spiller writes the references handed over in that order, several
// at a time, and raises their marks; after a failure every later job fails
// without being written, until clear (nothing in flight).
func TestSpillerKeepsOrderAndStopsAfterAFailure(t *testing.T) {
	k := testkit.Kafka(t, embedded.KafkaOptions{})
	cfg := testkit.Config(k.Addr, "127.0.0.1:1")
	conn := kafkax.MustConn(cfg.Kafka)
	const topic = "spill-order"
	ctx := context.Background()
	if err := conn.EnsureTopics(ctx, 1, map[string]int{topic: 1}); err != nil {
		t.Fatal(err)
	}
	w := kafkax.NoLinger(conn.NewWriter(cfg.Kafka, ""))
	defer w.Close()
	st := &failingHold{SpillStore: store.NewMemorySpill()}
	sp := &spiller{store: st, topic: topic}
	// ref is app 8's reference of [from, to] of imr.publish/0, not joinable
	// with the one before it.
	ref := func(from, to int64) []spillRef {
		return []spillRef{{App: 8, Topic: "imr.publish", Partition: 0, Inc: "r1", From: from, To: to, Held: int(to - from + 1), After: -1}}
	}
	stream := store.SpillStream(8, "imr.publish", "r1", 0)

	// 50 jobs handed over at once, each of two offsets.
	var jobs []*spillJob
	for i := int64(0); i < 100; i += 2 {
		jobs = append(jobs, sp.submit(ctx, w, ref(i, i+1), map[string]int64{stream: i + 1}))
	}
	for i, j := range jobs {
		if err := j.wait(); err != nil {
			t.Fatalf("job %d: %v", i, err)
		}
	}
	got := testkit.ReadAll(t, cfg, topic)
	if len(got) != 50 {
		t.Fatalf("%d records in the spill topic, want 50", len(got))
	}
	for i, m := range got {
		r, err := parseRef(&m)
		if err != nil || r.From != int64(2*i) || r.To != int64(2*i+1) || r.Held != 2 || !isRef(&m) {
			t.Fatalf("record %d is %s (%v): the jobs' order was not kept", i, m.Value, err)
		}
	}
	if held, _, _ := st.Marks(ctx, []string{stream}); held[0] != 99 {
		t.Fatalf("held mark %d, want 99", held[0])
	}

	// A failed step: it and every job after it fail, nothing more is
	// written or raised, until clear.
	st.failing(true)
	failed := sp.submit(ctx, w, ref(100, 100), map[string]int64{stream: 100})
	if err := failed.wait(); err == nil {
		t.Fatal("a job whose marks were not raised succeeded")
	}
	st.failing(false)
	after := sp.submit(ctx, w, ref(101, 101), map[string]int64{stream: 101})
	if err := after.wait(); err == nil {
		t.Fatal("a job after a failed one was written")
	}
	if n := len(testkit.ReadAll(t, cfg, topic)); n != 50 {
		t.Fatalf("%d records in the spill topic, want 50 (a step whose marks failed writes no reference, nor any after it)", n)
	}
	sp.clear()
	again := sp.submit(ctx, w, ref(100, 101), map[string]int64{stream: 101})
	if err := again.wait(); err != nil {
		t.Fatal(err)
	}
	if held, _, _ := st.Marks(ctx, []string{stream}); held[0] != 101 {
		t.Fatalf("held mark %d after clear, want 101", held[0])
	}

	// One step joins an app's references that continue one another (the
	// app held without a break) up to maxRefSpan, and no others.
	before := len(testkit.ReadAll(t, cfg, topic))
	cont := func(from, to, after int64) spillRef {
		return spillRef{App: 8, Topic: "imr.publish", Partition: 0, Inc: "r1", From: from, To: to, Held: 1, After: after}
	}
	steps := []*spillJob{
		{ctx: ctx, w: w, refs: []spillRef{cont(200, 299, -1), {App: 9, Topic: "imr.publish", Partition: 0, Inc: "r1", From: 250, To: 299, Held: 1, After: -1}}, done: make(chan struct{})},
		{ctx: ctx, w: w, refs: []spillRef{cont(300, 399, 299)}, done: make(chan struct{})},
		{ctx: ctx, w: w, refs: []spillRef{cont(450, 499, 420)}, done: make(chan struct{})}, // a break: released and held again
		{ctx: ctx, w: w, refs: []spillRef{cont(500, 500+maxRefSpan, 499)}, done: make(chan struct{})},
	}
	sp.step(steps)
	var ranges []string
	for _, m := range testkit.ReadAll(t, cfg, topic)[before:] {
		r, err := parseRef(&m)
		if err != nil {
			t.Fatal(err)
		}
		ranges = append(ranges, fmt.Sprintf("%d:[%d,%d]x%d", r.App, r.From, r.To, r.Held))
	}
	want := []string{"8:[200,399]x2", "9:[250,299]x1", "8:[450,499]x1", fmt.Sprintf("8:[500,%d]x1", 500+maxRefSpan)}
	if fmt.Sprint(ranges) != fmt.Sprint(want) {
		t.Fatalf("references written %v, want %v", ranges, want)
	}
}

// Holds finds the spill record that holds a lane record back: a reference
// whose range covers it, for its app, or a copy of it.
func TestHolds(t *testing.T) {
	ref := spillRef{App: 8, Topic: "imr.publish", Partition: 3, Inc: "r1", From: 100, To: 199, Held: 7}
	m := ref.record("imr.publish.spill")
	for _, c := range []struct {
		app       int64
		partition int
		offset    int64
		want      bool
	}{{8, 3, 100, true}, {8, 3, 199, true}, {8, 3, 150, true}, {8, 3, 99, false}, {8, 3, 200, false}, {7, 3, 150, false}, {8, 2, 150, false}} {
		if got := Holds(&m, c.app, "imr.publish", c.partition, c.offset); got != c.want {
			t.Errorf("app %d %d/%d: holds %v, want %v", c.app, c.partition, c.offset, got, c.want)
		}
	}
	cp := kafka.Message{Key: []byte("8:1"), Value: []byte("{}"), Headers: []kafka.Header{{Key: HeaderOriginTopic, Value: []byte("imr.publish")},
		{Key: HeaderOriginPartition, Value: []byte("3")}, {Key: HeaderOriginOffset, Value: []byte("150")}}}
	if !Holds(&cp, 8, "imr.publish", 3, 150) || Holds(&cp, 8, "imr.publish", 3, 151) {
		t.Error("a copy holds back exactly the record it copied")
	}
}

// keyApp reads the app a record key starts with, and nothing from keys
// that name none.
func TestKeyApp(t *testing.T) {
	for key, want := range map[string]int64{"8:1001": 8, "7:group:3": 7, "-5:1": -5, "9223372036854775807:1": 9223372036854775807,
		"9223372036854775808:1": unkeyed, "": unkeyed, "8": unkeyed, ":1": unkeyed, "server:s1": unkeyed, "8x:1": unkeyed, "-:1": unkeyed} {
		if got := keyApp([]byte(key)); got != want {
			t.Errorf("keyApp(%q) = %d, want %d", key, got, want)
		}
	}
}
