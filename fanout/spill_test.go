package fanout

import (
	"context"
	"errors"
	"strconv"
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

// The spiller writes the spills handed over in that order, several at a
// time, and raises their marks; after a failure every later spill fails
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
	sp := &spiller{store: st}
	rec := func(i int) kafka.Message {
		return kafka.Message{Topic: topic, Key: []byte("8:1"), Value: []byte(strconv.Itoa(i))}
	}

	// 50 spills handed over at once, each of two records.
	var jobs []*spillJob
	for i := 0; i < 100; i += 2 {
		jobs = append(jobs, sp.submit(ctx, w, []kafka.Message{rec(i), rec(i + 1)}, map[string]int64{"s": int64(i + 1)}))
	}
	for i, j := range jobs {
		if refused, err := j.wait(); err != nil || len(refused) > 0 {
			t.Fatalf("spill %d: refused %v, err %v", i, refused, err)
		}
	}
	got := testkit.ReadAll(t, cfg, topic)
	if len(got) != 100 {
		t.Fatalf("%d records in the spill topic, want 100", len(got))
	}
	for i, m := range got {
		if string(m.Value) != strconv.Itoa(i) {
			t.Fatalf("record %d is %s: the spills' order was not kept", i, m.Value)
		}
	}
	if held, _, _ := st.Marks(ctx, []string{"s"}); held[0] != 99 {
		t.Fatalf("held mark %d, want 99", held[0])
	}

	// A failed step: it and every spill after it fail, nothing more is
	// written or raised, until clear.
	st.failing(true)
	failed := sp.submit(ctx, w, []kafka.Message{rec(100)}, map[string]int64{"s": 100})
	if _, err := failed.wait(); err == nil {
		t.Fatal("a spill whose marks were not raised succeeded")
	}
	st.failing(false)
	after := sp.submit(ctx, w, []kafka.Message{rec(101)}, map[string]int64{"s": 101})
	if _, err := after.wait(); err == nil {
		t.Fatal("a spill after a failed one was written")
	}
	if n := len(testkit.ReadAll(t, cfg, topic)); n != 101 {
		t.Fatalf("%d records in the spill topic, want 101 (the failed step's write, none after it)", n)
	}
	sp.clear()
	again := sp.submit(ctx, w, []kafka.Message{rec(100), rec(101)}, map[string]int64{"s": 101})
	if _, err := again.wait(); err != nil {
		t.Fatal(err)
	}
	if held, _, _ := st.Marks(ctx, []string{"s"}); held[0] != 101 {
		t.Fatalf("held mark %d after clear, want 101", held[0])
	}
}
