package fanout

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/imstream/imstream/internal/plumbing/kafkax"
	"github.com/imstream/imstream/store"
)

// HeaderSpillRef marks a spill record that references held records
// (spillRef) rather than copying one.
const HeaderSpillRef = "spill_ref"

// TypeSpillRef is the type of a spill reference's JSON value.
const TypeSpillRef = "spill_ref"

// spillRef references records fair share held back: every record of App
// in [From, To] of a lane partition's incarnation. The drainer reads the
// range back from the partition, keeps the records whose key names App,
// and routes them. FP is the fingerprint of the record at To
// (kafkax.Fingerprint): a log that holds another record there started
// again, and the range is gone.
type spillRef struct {
	App       int64  `json:"appid"`
	Topic     string `json:"topic"`
	Partition int    `json:"partition"`
	Inc       string `json:"inc,omitempty"`
	From      int64  `json:"from"`
	To        int64  `json:"to"`
	FP        string `json:"fp"`
	Held      int    `json:"held"` // records of App in the range
	// After is the To of the app's previous reference on the partition
	// when the app stayed held in between (-1: not), so that the spiller
	// may join the two into one range.
	After int64 `json:"-"`
}

// stream is the ref's SpillStream: the marks it raises.
func (r *spillRef) stream() string { return store.SpillStream(r.App, r.Topic, r.Inc, r.Partition) }

// maxRefSpan is the widest range the spiller joins references into: the
// drainer holds a range's records of the app in memory while it routes
// them.
const maxRefSpan = 20_000

// spillRefJSON is a reference's record value.
type spillRefJSON struct {
	V    int    `json:"v"`
	Type string `json:"type"`
	spillRef
}

// record is the ref's spill record, keyed "<appid>:ref" with its lane
// partition in origin_partition (where OutputBalancer puts it: with the
// app's copies and references of that partition).
func (r spillRef) record(topic string) kafka.Message {
	v, _ := json.Marshal(spillRefJSON{V: 1, Type: TypeSpillRef, spillRef: r}) // cannot fail: strings and numbers
	h := []kafka.Header{
		{Key: HeaderSpillRef, Value: []byte("1")},
		{Key: HeaderOriginTopic, Value: []byte(r.Topic)},
		{Key: HeaderOriginPartition, Value: strconv.AppendInt(nil, int64(r.Partition), 10)},
	}
	if r.Inc != "" {
		h = append(h, kafka.Header{Key: HeaderOriginInc, Value: []byte(r.Inc)})
	}
	return kafka.Message{Topic: topic, Key: append(strconv.AppendInt(nil, r.App, 10), ":ref"...), Value: v, Headers: h}
}

// isRef reports whether a spill record is a reference.
func isRef(m *kafka.Message) bool {
	for _, h := range m.Headers {
		if h.Key == HeaderSpillRef {
			return true
		}
	}
	return false
}

// Holds reports whether spill record m holds back the record at offset of
// topic's partition, of app: a reference whose range covers it, or a copy
// of it (as written before references).
func Holds(m *kafka.Message, app int64, topic string, partition int, offset int64) bool {
	if isRef(m) {
		r, err := parseRef(m)
		return err == nil && r.App == app && r.Topic == topic && r.Partition == partition && r.From <= offset && offset <= r.To
	}
	o, _, err := origin(m)
	return err == nil && o.Topic == topic && o.Partition == partition && o.Offset == offset
}

// parseRef reads a reference record.
func parseRef(m *kafka.Message) (spillRef, error) {
	var v spillRefJSON
	if err := json.Unmarshal(m.Value, &v); err != nil {
		return spillRef{}, fmt.Errorf("spill reference: %v", err)
	}
	r := v.spillRef
	switch {
	case v.Type != TypeSpillRef:
		return r, fmt.Errorf("spill reference: type %q, want %q", v.Type, TypeSpillRef)
	case r.Topic == "" || r.Partition < 0 || r.From < 0 || r.To < r.From:
		return r, fmt.Errorf("spill reference: topic %q partition %d range [%d, %d] is not a range of a partition", r.Topic, r.Partition, r.From, r.To)
	}
	return r, nil
}

// spiller writes one lane partition's references to held records to the
// spill topic and raises their held marks, off the batch's way: the
// partition's next batches are routed meanwhile, and a batch is committed
// only once its references are written (kafkax.Batch.Later).
//
// It writes the batches' references in the order they were handed over,
// one step at a time, each step taking every batch waiting and joining an
// app's consecutive references into one range: an app's references reach
// the spill topic in source order (the drainer skips what is at or below
// its drained mark, so a later range must not pass an earlier one), and
// the held marks only rise (Hold is a plain HSET).
// After a step fails, every later one fails without writing; the consume
// loop then reads the partition again from the first batch whose spill
// failed, with a new spiller (fairShare.part starts the partition's state
// again).
type spiller struct {
	store store.SpillStore
	topic string // the spill topic

	mu      sync.Mutex
	queue   []*spillJob
	running bool
	err     error     // the first failure
	last    time.Time // when the last step began
}

// spillEvery is the least time between two steps of a spiller: the
// partition's spills in between are written together, in one produce
// request and one HSET of the marks, instead of one of each per batch
// (the batches meanwhile go on; only their commits wait).
const spillEvery = 50 * time.Millisecond

// spillJob is one batch's references and the held marks they raise.
type spillJob struct {
	ctx  context.Context
	w    *kafka.Writer
	refs []spillRef
	held map[string]int64

	done chan struct{}
	err  error
}

// submit hands refs (to write through w) and held over, after every
// earlier submission.
func (s *spiller) submit(ctx context.Context, w *kafka.Writer, refs []spillRef, held map[string]int64) *spillJob {
	j := &spillJob{ctx: ctx, w: w, refs: refs, held: held, done: make(chan struct{})}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.queue = append(s.queue, j)
	if !s.running {
		s.running = true
		go s.run()
	}
	return j
}

// wait returns, once j is written, nil, or why it was not.
func (j *spillJob) wait() error {
	<-j.done
	return j.err
}

// clear forgets a failure, for a caller that waited for every job it
// submitted (so that none is in flight) and will submit the failed ones
// again.
func (s *spiller) clear() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.err = nil
}

func (s *spiller) run() {
	for {
		s.mu.Lock()
		if wait := spillEvery - time.Since(s.last); wait > 0 {
			s.mu.Unlock()
			time.Sleep(wait)
			s.mu.Lock()
		}
		s.last = time.Now()
		jobs, failed := s.queue, s.err
		s.queue = nil
		if len(jobs) == 0 {
			s.running = false
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		if failed != nil {
			for _, j := range jobs {
				j.err = fmt.Errorf("an earlier spill write of the partition failed: %w", failed)
				close(j.done)
			}
			continue
		}
		s.step(jobs)
	}
}

// step raises jobs' held marks, then writes their references in one
// write, an app's consecutive ones joined; a failure is recorded before
// the jobs are told.
func (s *spiller) step(jobs []*spillJob) {
	ctx, w := jobs[0].ctx, jobs[0].w
	var refs []spillRef
	last := map[string]int{} // stream → its last reference in refs
	held := map[string]int64{}
	for _, j := range jobs {
		for _, r := range j.refs {
			k := r.stream()
			if i, ok := last[k]; ok && r.After >= 0 && refs[i].To == r.After && r.To-refs[i].From <= maxRefSpan {
				refs[i].To, refs[i].FP, refs[i].Held = r.To, r.FP, refs[i].Held+r.Held
				continue
			}
			last[k] = len(refs)
			refs = append(refs, r)
		}
		for k, v := range j.held {
			held[k] = max(held[k], v)
		}
	}
	// The marks first: a reference without its mark would have a
	// partition's next owner route its records at once, and the drainer
	// again (the sinks drop the repeat, but it is work for nothing).
	var err error
	if len(held) > 0 {
		if err = s.store.Hold(ctx, held); err != nil {
			err = fmt.Errorf("fair share: raise held marks: %w", err)
		}
	}
	if err == nil && len(refs) > 0 {
		recs := make([]kafka.Message, len(refs))
		for i, r := range refs {
			recs[i] = r.record(s.topic)
		}
		var refused map[int]error
		if refused, err = kafkax.WriteRefusing(ctx, w, recs...); err == nil && len(refused) > 0 {
			for _, e := range refused { // a record of a few hundred bytes: a broker that refuses it refuses every write to the topic
				err = fmt.Errorf("fair share: the brokers refused a spill reference: %w", e)
				break
			}
		}
	}
	if err != nil {
		s.mu.Lock()
		s.err = err
		s.mu.Unlock()
	}
	for _, j := range jobs {
		j.err = err
		close(j.done)
	}
}
