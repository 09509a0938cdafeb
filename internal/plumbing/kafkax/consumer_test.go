package kafkax_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/imstream/imstream/internal/plumbing/config"
	"github.com/imstream/imstream/internal/plumbing/kafkax"
	"github.com/imstream/imstream/internal/tools/embedded"
	"github.com/imstream/imstream/internal/tools/testkit"
)

// recorder is a handler that keeps what it was given per partition and
// checks the consume loop's contract as it goes: batches no larger than
// max, offsets of a partition contiguous from the first one seen.
type recorder struct {
	t   *testing.T
	max int

	mu     sync.Mutex
	values map[int][]string // partition → values in delivery order
	next   map[int]int64    // partition → offset expected next
	fail   map[int]int      // partition → batches still to fail
	bad    []string
}

func newRecorder(t *testing.T, max int) *recorder {
	return &recorder{t: t, max: max, values: map[int][]string{}, next: map[int]int64{}, fail: map[int]int{}}
}

func (r *recorder) HandleBatch(_ context.Context, b kafkax.Batch) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(b.Records) == 0 || len(b.Records) > r.max {
		r.bad = append(r.bad, fmt.Sprintf("partition %d: batch of %d records (max %d)", b.Partition, len(b.Records), r.max))
	}
	if r.fail[b.Partition] > 0 {
		r.fail[b.Partition]--
		return errors.New("injected failure")
	}
	for _, m := range b.Records {
		if m.Partition != b.Partition || m.Topic != b.Topic {
			r.bad = append(r.bad, fmt.Sprintf("record of %s/%d in a batch of %s/%d", m.Topic, m.Partition, b.Topic, b.Partition))
		}
		if want, ok := r.next[m.Partition]; ok && m.Offset != want {
			r.bad = append(r.bad, fmt.Sprintf("partition %d: offset %d after %d", m.Partition, m.Offset, want-1))
		}
		r.next[m.Partition] = m.Offset + 1
		r.values[m.Partition] = append(r.values[m.Partition], string(m.Value))
	}
	return nil
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, v := range r.values {
		n += len(v)
	}
	return n
}

func consumerConfig(group, topic string, maxBatch, queue int) kafkax.ConsumerConfig {
	return kafkax.ConsumerConfig{Group: group, Topics: []string{topic}, MaxBatch: maxBatch, MaxWait: 50 * time.Millisecond,
		QueueSize: queue, MaxFetchBytes: 1 << 20, CommitInterval: 50 * time.Millisecond,
		RetryMin: 10 * time.Millisecond, RetryMax: 200 * time.Millisecond,
		SessionTimeout: 6 * time.Second, HeartbeatInterval: 500 * time.Millisecond, RebalanceTimeout: 6 * time.Second}
}

func produceNumbered(t *testing.T, cfg config.Config, topic string, from, n int) {
	t.Helper()
	msgs := make([]kafka.Message, n)
	for i := range msgs {
		msgs[i] = kafka.Message{Topic: topic, Key: []byte(fmt.Sprint((from + i) % 97)), Value: []byte(fmt.Sprint(from + i))}
	}
	testkit.Produce(t, cfg, msgs...)
}

// stopConsume ends a Consume that reports on done and checks that it
// returned, without an error.
func stopConsume(t *testing.T, cancel context.CancelFunc, done <-chan error) {
	t.Helper()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Consume did not return after its context ended")
	}
}

// checkDelivered asserts every partition's values are exactly what was
// produced to it, in order.
func checkDelivered(t *testing.T, cfg config.Config, topic string, r *recorder) {
	t.Helper()
	want := map[int][]string{}
	for _, m := range testkit.ReadAll(t, cfg, topic) {
		want[m.Partition] = append(want[m.Partition], string(m.Value))
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, b := range r.bad {
		t.Error(b)
	}
	for p, w := range want {
		got := r.values[p]
		if len(got) != len(w) {
			t.Errorf("partition %d: %d records delivered, %d produced", p, len(got), len(w))
			continue
		}
		for i := range w {
			if got[i] != w[i] {
				t.Errorf("partition %d: record %d is %q, want %q", p, i, got[i], w[i])
				break
			}
		}
	}
}

// The consume loop hands every record over exactly once and in order per
// partition, in batches no larger than MaxBatch — with a queue smaller than
// a fetch, so the fetcher's back-pressure engages — retries a failed batch
// with the same records, and a restarted group resumes from its commits.
func TestConsumeInOrderWithRetriesAndResume(t *testing.T) {
	k := testkit.Kafka(t, embedded.KafkaOptions{})
	cfg := testkit.Config(k.Addr, "127.0.0.1:1")
	const topic, group = "consume", "consume-test"
	produceNumbered(t, cfg, topic, 0, 20000)

	conn := kafkax.MustConn(cfg.Kafka)
	r := newRecorder(t, 100)
	for p := range cfg.Kafka.Partitions {
		r.fail[p] = 2
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- conn.Consume(ctx, consumerConfig(group, topic, 100, 150), r) }()
	testkit.WaitCaughtUp(t, cfg, group, topic, 60*time.Second)
	// Records produced while the group runs arrive too.
	produceNumbered(t, cfg, topic, 20000, 3000)
	testkit.WaitCaughtUp(t, cfg, group, topic, 60*time.Second)
	stopConsume(t, cancel, done)
	if n := r.count(); n != 23000 {
		t.Fatalf("%d records delivered, want 23000", n)
	}
	checkDelivered(t, cfg, topic, r)

	// A new run of the group starts where the commits left off.
	produceNumbered(t, cfg, topic, 23000, 1000)
	r2 := newRecorder(t, 100)
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	go func() { _ = conn.Consume(ctx2, consumerConfig(group, topic, 100, 4096), r2) }()
	testkit.WaitCaughtUp(t, cfg, group, topic, 60*time.Second)
	if n := r2.count(); n != 1000 {
		t.Fatalf("resumed group delivered %d records, want the 1000 new ones", n)
	}
	r2.mu.Lock()
	for _, b := range r2.bad {
		t.Error(b)
	}
	r2.mu.Unlock()
}

// Leader connections that break are re-dialled: a broker restart in the
// middle of consumption loses and repeats nothing the handler saw twice
// within one generation, and the loop carries on afterwards.
func TestConsumeSurvivesBrokerRestart(t *testing.T) {
	dir := t.TempDir()
	k := testkit.Kafka(t, embedded.KafkaOptions{DataDir: dir})
	cfg := testkit.Config(k.Addr, "127.0.0.1:1")
	const topic, group = "restart", "restart-test"
	produceNumbered(t, cfg, topic, 0, 5000)
	conn := kafkax.MustConn(cfg.Kafka)
	var mu sync.Mutex
	seen := map[string]int{}
	h := kafkax.HandlerFunc(func(_ context.Context, b kafkax.Batch) error {
		mu.Lock()
		defer mu.Unlock()
		for _, m := range b.Records {
			seen[string(m.Value)]++
		}
		return nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = conn.Consume(ctx, consumerConfig(group, topic, 100, 4096), h) }()
	testkit.WaitCaughtUp(t, cfg, group, topic, 60*time.Second)

	_, port, err := net.SplitHostPort(k.Addr)
	if err != nil {
		t.Fatal(err)
	}
	k.Close()
	p, _ := strconv.Atoi(port)
	testkit.Kafka(t, embedded.KafkaOptions{DataDir: dir, Port: p})
	produceNumbered(t, cfg, topic, 5000, 2000)
	testkit.WaitCaughtUp(t, cfg, group, topic, 90*time.Second)
	mu.Lock()
	defer mu.Unlock()
	for i := range 7000 {
		if seen[fmt.Sprint(i)] == 0 {
			t.Fatalf("record %d never delivered", i)
		}
	}
}

// TestOffsetsSeeTopicsCreatedElsewhere: a process whose transport has
// already cached the cluster's metadata (a presence role started before
// the fanout created imr.publish) reads the partitions, offsets and lag of
// a topic another process created a moment ago at once, not a metadata
// refresh later; a topic that does not exist is still reported unknown.
func TestOffsetsSeeTopicsCreatedElsewhere(t *testing.T) {
	k := testkit.Kafka(t, embedded.KafkaOptions{})
	cfg := testkit.Config(k.Addr, "127.0.0.1:1").Kafka
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	early := kafkax.MustConn(cfg)
	if _, _, err := early.Offsets(ctx, "later"); !errors.Is(err, kafka.UnknownTopicOrPartition) {
		t.Fatalf("offsets of a topic not created yet: %v, want unknown topic", err)
	}
	other := kafkax.MustConn(cfg)
	if err := other.EnsureTopics(ctx, 1, map[string]int{"later": 3}); err != nil {
		t.Fatal(err)
	}
	w := other.NewWriter(cfg, "later")
	defer w.Close()
	if err := kafkax.Write(ctx, w, kafka.Message{Key: []byte("k"), Value: []byte("v")}); err != nil {
		t.Fatal(err)
	}
	if n, err := early.Partitions(ctx, "later"); err != nil || n != 3 {
		t.Fatalf("partitions right after another process created the topic: %d, %v; want 3", n, err)
	}
	lag, err := early.Lag(ctx, "nobody", "later")
	if err != nil {
		t.Fatalf("lag right after another process created the topic: %v", err)
	}
	total := int64(0)
	for _, l := range lag {
		total += l
	}
	if len(lag) != 3 || total != 1 {
		t.Fatalf("lag %v, want 3 partitions holding 1 record", lag)
	}
	if _, err := early.Partitions(ctx, "never"); !errors.Is(err, kafka.UnknownTopicOrPartition) {
		t.Fatalf("partitions of a topic that does not exist: %v, want unknown topic", err)
	}
}

// laterSink is a handler that leaves each batch's write to a sink to
// finish later (Batch.Later), chained per partition as the fanout chains
// its spill writes, and fails some of those writes: the sink drops what it
// already holds by offset, as the real sinks drop repeats by source offset.
type laterSink struct {
	mu      sync.Mutex
	got     map[int][]string      // partition → values applied, in order
	applied map[int]int64         // partition → next offset the sink expects
	last    map[int]*write        // partition → the last write started
	next    map[int]int64         // partition → offset expected in the next batch
	fails   map[[2]int64]bool     // partition, offset → a write of the batch holding it has failed
	failed  map[int]int64         // partition → first offset of the batch whose write failed last
	gate    map[int]chan struct{} // partition → closed when its second batch is handed over
	// partition → the attempt that failed after leaving a wait, and
	// whether that wait ended
	attemptFailed, attemptWaited map[int]bool
	rewound                      int // batches that started where a failed write's batch did
	bad                          []string
}

type write struct {
	done chan struct{}
	err  error
}

func (s *laterSink) HandleBatch(_ context.Context, b kafkax.Batch) error {
	p, first := b.Partition, b.Records[0].Offset
	s.mu.Lock()
	// The first attempt of the batch holding offset 200 leaves a wait,
	// then fails: the loop must let that wait end before the retry.
	if last := b.Records[len(b.Records)-1].Offset; first <= 200 && 200 <= last && !s.attemptFailed[p] {
		s.attemptFailed[p] = true
		s.mu.Unlock()
		b.Later(func() error {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.attemptWaited[p] = true
			return nil
		})
		return errors.New("injected handler failure")
	}
	if s.attemptFailed[p] && !s.attemptWaited[p] {
		s.bad = append(s.bad, fmt.Sprintf("partition %d: the failed attempt's wait did not end before the retry", p))
	}
	if want, ok := s.next[p]; ok && first != want {
		if f, ok := s.failed[p]; ok && first == f {
			s.rewound++
			delete(s.failed, p)
			if w := s.last[p]; w != nil {
				select {
				case <-w.done:
				default:
					s.bad = append(s.bad, fmt.Sprintf("partition %d read again while a write was still in flight", p))
				}
			}
			s.last[p] = nil // every write ended: a new chain
		} else {
			s.bad = append(s.bad, fmt.Sprintf("partition %d: batch at %d, want %d", p, first, want))
		}
	}
	// The first batch's write waits for the second batch to be handed
	// over: the loop must not wait for it before going on.
	gate, firstBatch := s.gate[p], false
	if gate == nil {
		gate, firstBatch = make(chan struct{}), true
		s.gate[p] = gate
	} else if _, ok := s.next[p]; ok && first == s.next[p] {
		select {
		case <-gate:
		default:
			close(gate)
		}
	}
	s.next[p] = b.Records[len(b.Records)-1].Offset + 1
	// The first write of the batches holding offsets 100 and 300 of each
	// partition fails.
	var fail [][2]int64
	for _, at := range []int64{100, 300} {
		if k := [2]int64{int64(p), at}; first <= at && at <= b.Records[len(b.Records)-1].Offset && !s.fails[k] {
			fail = append(fail, k)
		}
	}
	prev, cur := s.last[p], &write{done: make(chan struct{})}
	s.last[p] = cur
	s.mu.Unlock()
	recs := b.Records
	go func() {
		defer close(cur.done)
		if firstBatch {
			<-gate
		}
		if prev != nil {
			if <-prev.done; prev.err != nil {
				cur.err = fmt.Errorf("an earlier write failed: %w", prev.err)
				return
			}
		}
		time.Sleep(time.Millisecond) // a round trip
		s.mu.Lock()
		defer s.mu.Unlock()
		if len(fail) > 0 {
			for _, k := range fail {
				s.fails[k] = true
			}
			cur.err = errors.New("injected write failure")
			if _, ok := s.failed[p]; !ok {
				s.failed[p] = first
			}
			return
		}
		for _, m := range recs {
			if m.Offset >= s.applied[p] {
				s.got[p] = append(s.got[p], string(m.Value))
				s.applied[p] = m.Offset + 1
			}
		}
	}()
	if !b.Later(func() error { <-cur.done; return cur.err }) {
		s.mu.Lock()
		s.bad = append(s.bad, "a batch of the consume loop did not take Later")
		s.mu.Unlock()
	}
	return nil
}

// A handler may leave a batch's writes to finish later: the loop hands
// the next batches over meanwhile, commits only what finished, and when a
// write fails it reads the partition again from that write's batch, after
// every write in flight ended — nothing is lost, nothing applied twice,
// order kept, and the commits reach the end.
func TestConsumeLater(t *testing.T) {
	k := testkit.Kafka(t, embedded.KafkaOptions{})
	cfg := testkit.Config(k.Addr, "127.0.0.1:1")
	const topic, group = "later", "later-test"
	produceNumbered(t, cfg, topic, 0, 20000)

	conn := kafkax.MustConn(cfg.Kafka)
	s := &laterSink{got: map[int][]string{}, applied: map[int]int64{}, last: map[int]*write{}, next: map[int]int64{},
		fails: map[[2]int64]bool{}, failed: map[int]int64{}, gate: map[int]chan struct{}{},
		attemptFailed: map[int]bool{}, attemptWaited: map[int]bool{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- conn.Consume(ctx, consumerConfig(group, topic, 50, 150), s) }()
	testkit.WaitCaughtUp(t, cfg, group, topic, 60*time.Second)
	stopConsume(t, cancel, done)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, b := range s.bad {
		t.Error(b)
	}
	for p := range cfg.Kafka.Partitions {
		if !s.attemptWaited[p] {
			t.Errorf("partition %d: the wait of the attempt that failed was never called", p)
		}
	}
	if want := 2 * cfg.Kafka.Partitions; s.rewound != want {
		t.Errorf("%d batches read again after their write failed, want %d (two per partition)", s.rewound, want)
	}
	want := map[int][]string{}
	for _, m := range testkit.ReadAll(t, cfg, topic) {
		want[m.Partition] = append(want[m.Partition], string(m.Value))
	}
	for p, w := range want {
		if fmt.Sprint(s.got[p]) != fmt.Sprint(w) {
			t.Errorf("partition %d: the sink holds %d records, want the %d produced, in order", p, len(s.got[p]), len(w))
		}
	}
}
