package fanout

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/imstream/imstream/internal/plumbing/config"
	"github.com/imstream/imstream/internal/plumbing/kafkax"
	"github.com/imstream/imstream/internal/plumbing/stage"
	"github.com/imstream/imstream/store"
)

// Fair share (docs/lanes.md). Per lane partition, the fanout routes each
// app's events now or holds them back: an app is held when its quota
// bucket (shared in Redis by every process) has no token left, or when the
// partition is saturated and the app sent more than its weighted share of
// the partition's recent records (only with
// fanout.fair_share.saturated_after set). Once held, every later record of
// the app on that partition is held too, until the drainer has routed all
// of them: that keeps each receiver's order.
//
// The app is read from the record's key, and a held record is neither
// decoded nor copied: the fanout writes a reference (spillRef: app, lane
// partition, incarnation, offset range) to the spill topic, and the
// drainer reads the range back from the lane partition, keeps the app's
// records, and routes them at most at the app's quota with the src of
// their own coordinates, so the sinks drop repeats exactly as if they had
// been routed at once.
//
// Beside writing references the fanout raises the app's held mark (the
// last offset its references cover) in the SpillStore, both off the
// batch's way (spiller) and before the batch is committed; the drainer
// sets the drained mark after its outputs are acknowledged. A partition's
// new owner reads both marks and keeps holding while held > drained.

// Headers of a spill record: where its records were read (a copy, as
// written before references, carries origin_offset too).
const (
	HeaderOriginTopic     = "origin_topic"
	HeaderOriginPartition = "origin_partition"
	HeaderOriginOffset    = "origin_offset"
	HeaderOriginInc       = "origin_inc"
)

// Why an app is held back.
const (
	HeldQuota = "quota"
	HeldShare = "share"
)

type partKey struct {
	topic     string
	partition int
}

// partState is fair share's state of one lane partition. Its worker
// holds mu while deciding a batch; the held gauge's recount reads it too.
type partState struct {
	mu      sync.Mutex
	inc     string
	next    int64 // offset after the last batch routed: a batch starting elsewhere reloads the marks
	apps    map[int64]*appState
	total   float64 // recent records, decayed by half every second
	decayed time.Time
	spill   *spiller   // writes the held events and raises their marks, in order
	reading *marksRead // held apps' marks being read again, or nil
}

// appState is one app's state on one lane partition.
type appState struct {
	stream  string // store.SpillStream
	recent  float64
	reason  string    // HeldQuota or HeldShare while held, else ""
	held    int64     // the held mark: highest source offset spilled
	drained int64     // the drained mark, as last read
	tokens  int       // quota tokens taken from the shared bucket and not yet spent
	grant   int       // while a batch is decided: its events the app may route now, or -1 for no limit
	checked time.Time // when the marks were last read
	lastTo  int64     // while held: where its last reference ended (-1: none since it was held)
	// caughtUp: a read in the background found every event held before
	// it drained; the next batch of the app reads the marks again, to
	// release it.
	caughtUp bool
}

// recheck is how often the marks of an app held on a partition are read
// again to see whether its held events were all drained: not every batch,
// and in the background (a batch never waits for that read; the first
// batch after it applies it), at the cost of holding the app up to this
// much longer than needed.
const recheck = 200 * time.Millisecond

// fairShare is the fanout's fair share and quotas.
type fairShare struct {
	store store.SpillStore
	now   func() time.Time
	m     *appMetrics
	lane  func(topic string) string // "online" or "bulk"
	// spillTopic is where references go; readers (drain.go) read their
	// ranges back.
	spillTopic  string
	readers     *rangeReaders
	lostOffsets *prometheus.CounterVec

	mu       sync.Mutex
	cfg      config.FairShare
	state    map[partKey]*partState
	drained  map[string]int64  // per stream: the drainer's drained marks
	spillPos map[partKey]int64 // per spill partition: offset after the last batch drained
}

type heldKey struct {
	app    int64
	reason string
}

func (fs *fairShare) config() config.FairShare {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return fs.cfg
}

// setConfig replaces the quotas and weights (a reload).
func (fs *fairShare) setConfig(c config.FairShare) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.cfg = c
}

// part returns the state of b's partition, reset when b does not start
// where the last batch ended (a new owner, a retry after a rebalance).
func (fs *fairShare) part(b stage.Batch) *partState {
	k := partKey{b.Topic, b.Partition}
	first := b.Records[0].Offset
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if ps := fs.state[k]; ps != nil && ps.next == first && ps.inc == string(b.Inc) {
		return ps
	}
	ps := fs.newPart(b, first)
	fs.state[k] = ps
	return ps
}

// newPart is a partition's state from scratch, for b's incarnation, the
// next batch starting at next.
func (fs *fairShare) newPart(b stage.Batch, next int64) *partState {
	return &partState{inc: string(b.Inc), next: next, apps: map[int64]*appState{}, spill: &spiller{store: fs.store, topic: fs.spillTopic}}
}

// countHeld sets the held gauge: per app and reason, the lane partitions
// this process has held the app back on whose held events are not all
// drained, by the marks in the store (one read for all). A partition that
// moved to another process counts in both until it comes back; an app
// whose backlog drained stops counting without waiting for its next event.
func (fs *fairShare) countHeld(ctx context.Context) error {
	type held struct {
		app    int64
		reason string
		stream string
	}
	var hs []held
	fs.mu.Lock()
	parts := make([]*partState, 0, len(fs.state))
	for _, ps := range fs.state {
		parts = append(parts, ps)
	}
	fs.mu.Unlock()
	for _, ps := range parts {
		ps.mu.Lock()
		for app, st := range ps.apps {
			if st.reason != "" {
				hs = append(hs, held{app, st.reason, st.stream})
			}
		}
		ps.mu.Unlock()
	}
	by := map[heldKey]int{}
	if len(hs) > 0 {
		streams := make([]string, len(hs))
		for i, h := range hs {
			streams[i] = h.stream
		}
		hm, dm, err := fs.store.Marks(ctx, streams)
		if err != nil {
			return err
		}
		for i, h := range hs {
			if hm[i] > dm[i] {
				by[heldKey{h.app, h.reason}]++
			}
		}
	}
	fs.m.held(by)
	return nil
}

// holding is what fair share decided for one lane batch.
type holding struct {
	skip  []bool           // per record: held back (neither decoded nor routed now); nil when none is
	refs  []spillRef       // the held records, by reference: one per app held in the batch
	marks map[string]int64 // the held marks the refs raise, per stream
}

// unkeyed is the app of a record whose key names none (keyApp): never
// held.
const unkeyed = math.MinInt64

// keyApp returns the appid a record key starts with ("<appid>:…", as
// every publish event's key does: schemas.AppendKey), or unkeyed.
func keyApp(key []byte) int64 {
	i, neg := 0, false
	if len(key) > 0 && key[0] == '-' {
		i, neg = 1, true
	}
	start := i
	var n int64
	for ; i < len(key) && key[i] >= '0' && key[i] <= '9'; i++ {
		d := int64(key[i] - '0')
		if n > (math.MaxInt64-d)/10 {
			return unkeyed
		}
		n = n*10 + d
	}
	if i == start || i == len(key) || key[i] != ':' {
		return unkeyed
	}
	if neg {
		return -n
	}
	return n
}

// decide returns which records of a lane batch are held back, and the
// references (spillRef) and held marks to write for them through the
// partition's spiller. The app of a record is the one its key names: a
// held app's records are skipped without being decoded. It first
// releases the apps whose held records were all drained.
//
// A crash between the reference write and the marks loses nothing: it
// leaves either a held mark with nothing referenced, written again by the
// partition's next owner, or references without a mark, whose records
// the next owner routes and the drainer again: the sinks drop the repeat.
func (fs *fairShare) decide(ctx context.Context, b stage.Batch) (holding, error) {
	ps := fs.part(b)
	ps.mu.Lock()
	defer ps.mu.Unlock()
	cfg, now := fs.config(), fs.now()
	apps := make([]int64, len(b.Records))
	for i := range b.Records {
		apps[i] = keyApp(b.Records[i].Key)
	}
	if err := fs.refresh(ctx, b, ps, apps, cfg, now); err != nil {
		return holding{}, err
	}
	grants, err := fs.take(ctx, b.Topic, ps, apps, cfg)
	if err != nil {
		return holding{}, err
	}
	for app, st := range ps.apps { // the grants kept with each app's state: one look-up per record below
		st.grant = -1
		if g, ok := grants[app]; ok {
			st.grant = g
		}
	}
	ps.decay(now)
	return ps.classify(b, apps, cfg, now), nil
}

// refresh reads the marks the batch needs: of apps first seen on the
// partition (an earlier owner may have held them) and of held ones a
// background read found caught up (to release them, after a read now:
// they may have held more since). Held ones not checked for recheck are
// read in the background, unless a read is still under way: a batch waits
// for a read only when it may release an app. Apps idle here are
// forgotten, so that the state stays the size of the partition's active
// apps.
func (fs *fairShare) refresh(ctx context.Context, b stage.Batch, ps *partState, apps []int64, cfg config.FairShare, now time.Time) error {
	ps.collect()
	var load, stale []int64
	seen := map[int64]bool{}
	last := int64(unkeyed)
	for _, app := range apps {
		if app == unkeyed || app == last || seen[app] {
			continue
		}
		last, seen[app] = app, true
		switch st := ps.apps[app]; {
		case st == nil || st.caughtUp:
			load = append(load, app)
		case st.reason != "" && now.Sub(st.checked) >= recheck && ps.reading == nil:
			stale = append(stale, app)
			st.checked = now
		}
	}
	for app, st := range ps.apps {
		if !seen[app] && st.reason == "" && st.recent < 0.01 && st.tokens == 0 {
			delete(ps.apps, app)
		}
	}
	if len(load) > 0 {
		streams := make([]string, len(load))
		for i, app := range load {
			streams[i] = store.SpillStream(app, b.Topic, ps.inc, b.Partition)
		}
		held, drained, err := fs.store.Marks(ctx, streams)
		if err != nil {
			return fmt.Errorf("fair share: read marks: %w", err)
		}
		for i, app := range load {
			st := ps.apps[app]
			if st == nil {
				st = &appState{stream: streams[i], held: -1, lastTo: -1}
				ps.apps[app] = st
			}
			st.checked, st.caughtUp = now, false
			st.marks(held[i], drained[i], cfg.Quota(app))
		}
	}
	if len(stale) > 0 {
		fs.readLater(ctx, ps, stale)
	}
	return nil
}

// collect applies the marks read in the background, if back: an app whose
// held records were all drained as of that read is marked caughtUp.
func (ps *partState) collect() {
	r := ps.reading
	if r == nil {
		return
	}
	select {
	case <-r.done:
	default:
		return
	}
	ps.reading = nil
	if r.err != nil { // read again at the next recheck (the failure is in the Redis call metrics)
		return
	}
	for i, app := range r.apps {
		if st := ps.apps[app]; st != nil && st.reason != "" && r.drained[i] >= r.heldAt[i] {
			st.caughtUp = true
		}
	}
}

// readLater reads the marks of apps in the background (ps.reading).
func (fs *fairShare) readLater(ctx context.Context, ps *partState, apps []int64) {
	r := &marksRead{apps: apps, heldAt: make([]int64, len(apps)), done: make(chan struct{})}
	streams := make([]string, len(apps))
	for i, app := range apps {
		streams[i], r.heldAt[i] = ps.apps[app].stream, ps.apps[app].held
	}
	ps.reading = r
	go func() {
		defer close(r.done)
		r.held, r.drained, r.err = fs.store.Marks(ctx, streams)
	}()
}

// classify decides each record of b (apps: the app each key names): an
// app out of quota tokens, or over its share of a saturated partition, is
// held from that record on; every record of a held app is held, and
// referenced: one spillRef per app from its first held record to the end
// of the batch, whose last offset becomes its held mark.
func (ps *partState) classify(b stage.Batch, apps []int64, cfg config.FairShare, now time.Time) holding {
	var h holding
	refOf := map[int64]int{} // app → index in h.refs
	var st *appState
	last := int64(unkeyed)
	for i := range b.Records {
		app := apps[i]
		if app == unkeyed {
			continue
		}
		if app != last {
			st, last = ps.apps[app], app
		}
		st.recent++
		ps.total++
		if st.reason == "" {
			if st.grant == 0 {
				st.reason = HeldQuota
			}
			st.grant--
			if st.reason == "" && cfg.SaturatedAfter > 0 && now.Sub(b.Records[i].Time) > cfg.SaturatedAfter && ps.overShare(app, st, cfg) {
				st.reason = HeldShare
			}
		}
		if st.reason == "" {
			continue
		}
		if h.skip == nil {
			h.skip = make([]bool, len(b.Records))
		}
		h.skip[i] = true
		k, ok := refOf[app]
		if !ok {
			k = len(h.refs)
			refOf[app] = k
			h.refs = append(h.refs, spillRef{App: app, Topic: b.Topic, Partition: b.Partition, Inc: ps.inc, From: b.Records[i].Offset, After: -1})
		}
		h.refs[k].Held++
	}
	if len(h.refs) == 0 {
		return h
	}
	end := &b.Records[len(b.Records)-1]
	fp := kafkax.Fingerprint(end)
	h.marks = make(map[string]int64, len(h.refs))
	for k := range h.refs {
		r := &h.refs[k]
		st := ps.apps[r.App]
		r.To, r.FP = end.Offset, fp
		if st.lastTo == b.Records[0].Offset-1 { // held without a break since its last reference ended
			r.After = st.lastTo
		}
		st.lastTo = end.Offset
		st.held = max(st.held, end.Offset)
		h.marks[st.stream] = st.held
	}
	return h
}

// take asks the quota buckets for the records of each app with a quota
// that the batch would route now, and returns what each was granted.
func (fs *fairShare) take(ctx context.Context, topic string, ps *partState, apps []int64, cfg config.FairShare) (map[int64]int, error) {
	want := map[int64]int{} // -1: nothing asked (held, or no quota)
	var asking []int64
	for _, app := range apps {
		if app == unkeyed {
			continue
		}
		n, ok := want[app]
		switch {
		case !ok && (ps.apps[app].reason != "" || cfg.Quota(app) == 0): // looked up once per app and batch
			want[app] = -1
			continue
		case !ok:
			asking = append(asking, app)
		case n < 0:
			continue
		}
		want[app] = n + 1
	}
	if len(asking) == 0 {
		return nil, nil
	}
	// Tokens are taken a tenth of a second of the quota ahead and kept
	// with the partition, so that a batch rarely waits for Redis; taken
	// tokens are spent tokens, so the quota still holds across processes.
	grants := make(map[int64]int, len(asking))
	var reqs []store.QuotaTake
	var asked []int64
	for _, app := range asking {
		st, n := ps.apps[app], want[app]
		if st.tokens >= n {
			grants[app], st.tokens = n, st.tokens-n
			continue
		}
		reqs = append(reqs, quotaTake(app, fs.lane(topic), n-st.tokens+cfg.Quota(app)/10, cfg))
		asked = append(asked, app)
	}
	if len(reqs) == 0 {
		return grants, nil
	}
	got, err := fs.store.Take(ctx, reqs)
	if err != nil {
		return nil, fmt.Errorf("fair share: quotas: %w", err)
	}
	for i, app := range asked {
		st := ps.apps[app]
		st.tokens += got[i].Granted
		g := min(want[app], st.tokens)
		grants[app], st.tokens = g, st.tokens-g
	}
	return grants, nil
}

// marks applies the marks read for the app (its quota: quota): an app
// held by an earlier owner is held, a held app whose held events were all
// drained is released.
func (st *appState) marks(held, drained int64, quota int) {
	st.held = max(st.held, held)
	st.drained = drained
	switch {
	case st.reason == "" && st.held > st.drained: // held by an earlier owner
		st.reason = HeldQuota
		if quota == 0 {
			st.reason = HeldShare
		}
	case st.reason != "" && st.drained >= st.held: // all drained: route again
		st.reason, st.lastTo = "", -1
	}
}

// marksRead is a read of held apps' marks under way in the background.
type marksRead struct {
	apps          []int64
	heldAt        []int64 // their held marks when the read began
	done          chan struct{}
	held, drained []int64
	err           error
}

// quotaTake is the request for n tokens of app's quota on lane.
func quotaTake(app int64, lane string, n int, cfg config.FairShare) store.QuotaTake {
	rate := float64(cfg.Quota(app))
	return store.QuotaTake{Bucket: store.QuotaBucket(app, lane), Rate: rate, Depth: math.Max(1, rate*cfg.Burst.Seconds()), N: n}
}

// done records that b was routed, and returns its partition's spiller.
func (fs *fairShare) done(b stage.Batch) *spiller {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	k := partKey{b.Topic, b.Partition}
	ps := fs.state[k]
	if ps == nil { // decide made it; kept for safety
		ps = fs.newPart(b, 0)
		fs.state[k] = ps
	}
	ps.next = b.Records[len(b.Records)-1].Offset + 1
	return ps.spill
}

// decay halves the partition's recent counts for each second since they
// were last halved (once per batch; each record adds one to its app's).
func (ps *partState) decay(now time.Time) {
	if d := now.Sub(ps.decayed).Seconds(); d >= 1 || ps.decayed.IsZero() {
		f := math.Pow(0.5, math.Min(d, 64))
		if ps.decayed.IsZero() {
			f = 1
		}
		ps.total = 0
		for _, s := range ps.apps {
			s.recent *= f
			ps.total += s.recent
		}
		ps.decayed = now
	}
}

// overShare reports whether app sent more than its weighted share of the
// partition's recent records, among the apps that sent any.
func (ps *partState) overShare(app int64, st *appState, cfg config.FairShare) bool {
	var weights float64
	active := 0
	for a, s := range ps.apps {
		if s.recent >= 1 {
			weights += float64(cfg.Weight(a))
			active++
		}
	}
	if active < 2 || ps.total <= 0 {
		return false
	}
	return st.recent/ps.total > float64(cfg.Weight(app))/weights
}
