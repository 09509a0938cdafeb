package fanout

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/imstream/imstream/internal/plumbing/kafkax"
	"github.com/imstream/imstream/internal/plumbing/stage"
	"github.com/imstream/imstream/schemas"
	"github.com/imstream/imstream/store"
)

// The drainer consumes the spill topic (consumer group
// <fanout.group>-spill, in the processes that consume the bulk lane) and
// routes what fair share held back: for a reference (spillRef), the app's
// records of the range, read back from the lane partition; for a copy
// (a spill record as written before references), the event it carries.
// Each app is routed at most at its quota, each event with the src of the
// record it was read at, so the sinks drop the repeats of an event routed
// twice (held again by a fanout that crashed before committing, or routed
// by a partition's next owner that found no held mark).

// drainSpill routes a batch of the spill topic, in order: references one
// at a time, runs of copies together.
func (f *Fanout) drainSpill(ctx context.Context, b stage.Batch) ([]stage.Rejected, error) {
	var rejected []stage.Rejected
	var refs []*spillRef // per record: its reference, or nil for a copy
	var streams []string
	for i := range b.Records {
		m := &b.Records[i]
		if !isRef(m) {
			refs = append(refs, nil)
			continue
		}
		r, err := parseRef(m)
		if err != nil {
			rejected = append(rejected, stage.Rejected{Msg: *m, Code: schemas.ReasonInvalid, Reason: err.Error()})
			refs = append(refs, nil)
			continue
		}
		refs = append(refs, &r)
		streams = append(streams, r.stream())
	}
	marks, err := f.fair.drainMarks(ctx, b, streams)
	if err != nil {
		return nil, err
	}
	for i := 0; i < len(b.Records); {
		if r := refs[i]; r != nil {
			more, err := f.drainRef(ctx, r, marks)
			if err != nil {
				return nil, err
			}
			rejected = append(rejected, more...)
			i++
			continue
		}
		j := i + 1
		for j < len(b.Records) && refs[j] == nil {
			j++
		}
		skip := make([]bool, len(b.Records)) // all but the copies in [i, j) (references there were rejected above)
		for k := range skip {
			skip[k] = k < i || k >= j || isRef(&b.Records[k])
		}
		decoded, bad := stage.Decode[*schemas.Publish](f.drain, b.Records, skip)
		more, err := f.drainCopies(ctx, decoded, marks)
		if err != nil {
			return nil, err
		}
		rejected = append(append(rejected, bad...), more...)
		i = j
	}
	f.fair.drainedDone(b, marks)
	return rejected, nil
}

// drainRef routes the records ref references, from its stream's drained
// mark (marks, raised as it goes) on, in chunks of about a tenth of a
// second of the app's quota, each chunk's tokens taken first. It
// dead-letters what it rejects itself, before the mark passes it.
func (f *Fanout) drainRef(ctx context.Context, ref *spillRef, marks map[string]int64) ([]stage.Rejected, error) {
	s := ref.stream()
	drained := marks[s]
	if ref.To <= drained {
		f.env.Metrics.Skipped.WithLabelValues(Stage, "spill_repeat").Inc()
		return nil, nil
	}
	from := max(ref.From, drained+1)
	recs, err := f.fair.readers.read(ctx, ref, from)
	var gone *kafkax.Gone
	if errors.As(err, &gone) {
		f.fair.lost(gone, ref)
		f.log.Error("fair share: held records are gone from their lane partition before the drainer read them back; the app's records there are lost",
			"app", ref.App, "topic", ref.Topic, "partition", ref.Partition, "inc", ref.Inc, "from", from, "to", ref.To, "err", err)
	} else if err != nil {
		return nil, err
	}
	// Dead letters go out before the drained mark passes them: a drainer
	// that crashed after raising it would not read them again.
	decoded, rejected := stage.Decode[*schemas.Publish](f.drain, recs, nil)
	if err := f.drain.Reject(ctx, rejected); err != nil {
		return nil, err
	}
	lane := f.lane(ref.Topic)
	chunk := len(decoded)
	if q := f.fair.config().Quota(ref.App); q > 0 {
		chunk = max(1, q/10)
	}
	for start := 0; start < len(decoded); start += chunk {
		part := decoded[start:min(start+chunk, len(decoded))]
		if err := f.fair.drainWait(ctx, map[appLane]int{{ref.App, lane}: len(part)}); err != nil {
			return nil, err
		}
		src := make([]routed, len(part))
		for i, d := range part {
			src[i] = routed{m: d.Msg, inc: ref.Inc}
		}
		more, err := f.routeEvents(ctx, f.wb, part, src)
		if err != nil {
			return nil, err
		}
		if err := f.drain.Reject(ctx, more); err != nil {
			return nil, err
		}
		mark := part[len(part)-1].Msg.Offset
		if start+chunk >= len(decoded) {
			mark = ref.To
		}
		if err := f.fair.setDrained(ctx, marks, s, mark); err != nil {
			return nil, err
		}
		f.countApps(f.env.Kafka.Topics.Spill, part, src, time.Now())
	}
	if len(decoded) == 0 {
		if err := f.fair.setDrained(ctx, marks, s, ref.To); err != nil {
			return nil, err
		}
	}
	return nil, nil
}

// drainCopies routes held events copied to the spill topic (as fanouts
// wrote them before references): each with the src of the record it was
// held back from, at most at its app's quota, events at or below their
// stream's drained mark skipped (spilled again after a crash).
func (f *Fanout) drainCopies(ctx context.Context, decoded []stage.Decoded[*schemas.Publish], marks map[string]int64) ([]stage.Rejected, error) {
	var rejected []stage.Rejected
	type copied struct {
		d      stage.Decoded[*schemas.Publish]
		o      kafka.Message
		inc    string
		stream string
	}
	cs := make([]copied, 0, len(decoded))
	var load []string // streams whose drained marks this batch did not read
	for _, d := range decoded {
		o, inc, err := origin(d.Msg)
		if err != nil {
			rejected = append(rejected, stage.Rejected{Msg: *d.Msg, Code: schemas.ReasonInvalid, Reason: err.Error()})
			continue
		}
		s := store.SpillStream(d.Event.AppID, o.Topic, inc, o.Partition)
		if _, ok := marks[s]; !ok && !slices.Contains(load, s) {
			load = append(load, s)
		}
		cs = append(cs, copied{d, o, inc, s})
	}
	if len(load) > 0 {
		_, drained, err := f.fair.store.Marks(ctx, load)
		if err != nil {
			return nil, fmt.Errorf("fair share: read drained marks: %w", err)
		}
		for i, s := range load {
			marks[s] = drained[i]
		}
	}
	keep := decoded[:0:0]
	var src []routed
	raised := map[string]int64{}
	counts := map[appLane]int{}
	for i := range cs {
		c := &cs[i]
		if r, ok := raised[c.stream]; c.o.Offset <= marks[c.stream] || ok && c.o.Offset <= r {
			f.env.Metrics.Skipped.WithLabelValues(Stage, "spill_repeat").Inc()
			continue
		}
		raised[c.stream] = c.o.Offset
		keep = append(keep, c.d)
		src = append(src, routed{m: &c.o, inc: c.inc})
		counts[appLane{c.d.Event.AppID, f.lane(c.o.Topic)}]++
	}
	if len(keep) == 0 {
		return rejected, nil
	}
	if err := f.fair.drainWait(ctx, counts); err != nil {
		return nil, err
	}
	more, err := f.routeEvents(ctx, f.wb, keep, src)
	if err != nil {
		return nil, err
	}
	// Refused outputs' inputs are dead-lettered before the marks pass them
	// (as drainRef does).
	if err := f.drain.Reject(ctx, more); err != nil {
		return nil, err
	}
	if err := f.fair.store.Drain(ctx, raised); err != nil {
		return nil, fmt.Errorf("fair share: set drained marks: %w", err)
	}
	for s, v := range raised {
		marks[s] = v
	}
	f.countApps(f.env.Kafka.Topics.Spill, keep, src, time.Now())
	return rejected, nil
}

// origin returns where a copied spill record's event was read: a copy of
// m with that topic, partition and offset, and its incarnation.
func origin(m *kafka.Message) (kafka.Message, string, error) {
	o := *m
	var inc string
	found := 0
	for _, h := range m.Headers {
		var err error
		switch h.Key {
		case HeaderOriginTopic:
			o.Topic, found = string(h.Value), found+1
		case HeaderOriginPartition:
			o.Partition, err = strconv.Atoi(string(h.Value))
			found++
		case HeaderOriginOffset:
			o.Offset, err = strconv.ParseInt(string(h.Value), 10, 64)
			found++
		case HeaderOriginInc:
			inc = string(h.Value)
		}
		if err != nil {
			return o, "", fmt.Errorf("spill record: header %s: %v", h.Key, err)
		}
	}
	if found != 3 {
		return o, "", errors.New("spill record: without its origin_topic, origin_partition and origin_offset headers")
	}
	return o, inc, nil
}

// drainMarks returns the drained marks of streams (read from the store
// when the spill partition's batch does not start where the last ended),
// -1 where none.
func (fs *fairShare) drainMarks(ctx context.Context, b stage.Batch, streams []string) (map[string]int64, error) {
	k := partKey{b.Topic, b.Partition}
	fs.mu.Lock()
	fresh := fs.spillPos[k] == b.Records[0].Offset
	var load []string
	for _, s := range streams {
		if _, ok := fs.drained[s]; !ok || !fresh {
			load = append(load, s)
		}
	}
	fs.mu.Unlock()
	if len(load) > 0 {
		_, drained, err := fs.store.Marks(ctx, load)
		if err != nil {
			return nil, fmt.Errorf("fair share: read drained marks: %w", err)
		}
		fs.mu.Lock()
		for i, s := range load {
			fs.drained[s] = drained[i]
		}
		fs.mu.Unlock()
	}
	out := make(map[string]int64, len(streams))
	fs.mu.Lock()
	defer fs.mu.Unlock()
	for _, s := range streams {
		out[s] = fs.drained[s]
	}
	return out, nil
}

// setDrained sets stream s's drained mark to v in the store and in marks.
func (fs *fairShare) setDrained(ctx context.Context, marks map[string]int64, s string, v int64) error {
	if err := fs.store.Drain(ctx, map[string]int64{s: v}); err != nil {
		return fmt.Errorf("fair share: set drained mark: %w", err)
	}
	marks[s] = v
	return nil
}

// drainWait takes the quota tokens of events about to be drained
// (reserve) and waits until the debt is paid.
func (fs *fairShare) drainWait(ctx context.Context, counts map[appLane]int) error {
	wait, err := fs.reserve(ctx, counts)
	if err != nil || wait <= 0 {
		return err
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// reserve takes the quota tokens of events about to be drained, going
// into debt (the quota buckets are shared with the lanes, which then hold
// the app back until it is paid), and returns how long until the debt is
// paid.
func (fs *fairShare) reserve(ctx context.Context, counts map[appLane]int) (time.Duration, error) {
	cfg := fs.config()
	var reqs []store.QuotaTake
	for k, n := range counts {
		if cfg.Quota(k.app) > 0 {
			r := quotaTake(k.app, k.lane, n, cfg)
			r.Reserve = true
			reqs = append(reqs, r)
		}
	}
	if len(reqs) == 0 {
		return 0, nil
	}
	got, err := fs.store.Take(ctx, reqs)
	if err != nil {
		return 0, fmt.Errorf("fair share: quotas: %w", err)
	}
	var wait time.Duration
	for _, g := range got {
		wait = max(wait, g.Wait)
	}
	return wait, nil
}

// appLane is an app on a lane.
type appLane struct {
	app  int64
	lane string
}

// drainedDone records a drained batch's marks (already in the store).
func (fs *fairShare) drainedDone(b stage.Batch, marks map[string]int64) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	for s, v := range marks {
		fs.drained[s] = v
	}
	fs.spillPos[partKey{b.Topic, b.Partition}] = b.Records[len(b.Records)-1].Offset + 1
}

// rangeReaders are the drainer's readers of lane partitions, one per
// partition, each used by one spill partition's worker at a time.
type rangeReaders struct {
	conn     *kafkax.Conn
	maxBytes int

	mu sync.Mutex
	rs map[partKey]*rangeReader
}

type rangeReader struct {
	mu sync.Mutex
	r  *kafkax.PartitionReader
}

// read returns the records of ref's app in [from, ref.To] of its lane
// partition (kafkax.PartitionReader.Read).
func (rr *rangeReaders) read(ctx context.Context, ref *spillRef, from int64) ([]kafka.Message, error) {
	k := partKey{ref.Topic, ref.Partition}
	rr.mu.Lock()
	r := rr.rs[k]
	if r == nil {
		r = &rangeReader{r: rr.conn.NewPartitionReader(ref.Topic, ref.Partition, rr.maxBytes)}
		rr.rs[k] = r
	}
	rr.mu.Unlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.r.Read(ctx, from, ref.To, ref.FP, func(m *kafka.Message) bool { return keyApp(m.Key) == ref.App })
}

// close closes every reader.
func (rr *rangeReaders) close() {
	rr.mu.Lock()
	defer rr.mu.Unlock()
	for _, r := range rr.rs {
		r.mu.Lock()
		r.r.Close()
		r.mu.Unlock()
	}
}

// lostOffsets counts the offsets of lane partitions whose held records
// could not be read back (imstream_fair_share_lost_offsets_total).
func newLostOffsets() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Name: "imstream_fair_share_lost_offsets_total",
		Help: "Offsets of lane partitions that fair share held an app's records in and the drainer could not read back, by reason: retention (deleted before they were read back), log_restarted (the partition's log started again: topic re-created, broker data lost). Each offset held a record of the app or of another; every one is also logged at ERROR."},
		[]string{"reason"})
}

// lost counts what a Gone read of ref could not find.
func (fs *fairShare) lost(g *kafkax.Gone, ref *spillRef) {
	if g.Restarted {
		fs.lostOffsets.WithLabelValues("log_restarted").Add(float64(g.To - g.From + 1))
		return
	}
	fs.lostOffsets.WithLabelValues("retention").Add(float64(min(g.First, g.To+1) - g.From))
}
