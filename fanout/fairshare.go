package fanout

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/imstream/imstream/internal/plumbing/config"
	"github.com/imstream/imstream/internal/plumbing/obs"
	"github.com/imstream/imstream/internal/plumbing/stage"
	"github.com/imstream/imstream/schemas"
	"github.com/imstream/imstream/store"
)

// Fair share (docs/lanes.md). Per lane partition, the fanout routes each
// app's events now or holds them back: an app is held when it has no
// quota token left (its quota, divided evenly among the lane's
// partitions), or when the partition is saturated and the app sent more
// than its weighted share of the partition's recent records. Once held,
// every later event of the app on that partition is held too, until the
// drainer has routed all of them: that keeps each receiver's order.
// Holding by share is on only with fanout.fair_share.saturated_after set. A held
// event is written, unchanged, to the spill topic (partitioned by appid,
// with its source coordinates in headers) and the drainer routes it from
// there, at most at the app's quota, with the src of its source record —
// so the sinks drop its repeats exactly as if it had been routed at once.
//
// Beside writing held events the fanout raises the app's held mark (the
// highest source offset it may have spilled) in the SpillStore, both off
// the batch's way (spiller) and before the batch is committed; the drainer
// sets the drained mark after its outputs are acknowledged. A partition's
// new owner reads both marks and keeps holding while held > drained.

// Headers of a spill record: where its event was read.
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
	return &partState{inc: string(b.Inc), next: next, apps: map[int64]*appState{}, spill: &spiller{store: fs.store}}
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

// decide returns, for each record of a lane batch, why it is held back
// ("": route it now), and the held marks the held ones raise (nil when
// none is held), to raise with their spill through the partition's
// spiller. It first releases the apps whose held events were all drained.
//
// A crash between the spill write and the marks loses nothing: it leaves
// either a held mark with nothing spilled, re-spilled by the partition's
// next owner, or spilled events without a mark, routed by the next owner
// and again by the drainer, whose repeat the sinks drop.
func (fs *fairShare) decide(ctx context.Context, b stage.Batch, decoded []stage.Decoded[*schemas.Publish]) ([]string, map[string]int64, error) {
	ps := fs.part(b)
	ps.mu.Lock()
	defer ps.mu.Unlock()
	cfg := fs.config()
	// The marks read in the background, if back: an app whose held events
	// were all drained as of that read may be released, after a read now
	// (it may have held more since).
	now := fs.now()
	if r := ps.reading; r != nil {
		select {
		case <-r.done:
			ps.reading = nil
			if r.err == nil { // else read again at the next recheck (the failure is in the Redis call metrics)
				for i, app := range r.apps {
					if st := ps.apps[app]; st != nil && st.reason != "" && r.drained[i] >= r.heldAt[i] {
						st.caughtUp = true
					}
				}
			}
		default:
		}
	}
	// Marks to read now: apps first seen on this partition (an earlier
	// owner may have held them) and held ones that caught up. Held ones
	// not checked for recheck are read in the background, unless a read
	// is still under way: a batch waits for a read only when it may
	// release an app.
	var load, stale []int64
	seen := map[int64]bool{}
	for _, d := range decoded {
		app := d.Event.AppID
		if seen[app] {
			continue
		}
		seen[app] = true
		switch st := ps.apps[app]; {
		case st == nil || st.caughtUp:
			load = append(load, app)
		case st.reason != "" && now.Sub(st.checked) >= recheck && ps.reading == nil:
			stale = append(stale, app)
			st.checked = now
		}
	}
	// Forget apps idle here (not held, nothing recent, no tokens left), so
	// that the state stays the size of the partition's active apps.
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
			return nil, nil, fmt.Errorf("fair share: read marks: %w", err)
		}
		for i, app := range load {
			st := ps.apps[app]
			if st == nil {
				st = &appState{stream: streams[i], held: -1}
				ps.apps[app] = st
			}
			st.checked, st.caughtUp = now, false
			st.marks(held[i], drained[i], cfg.Quota(app))
		}
	}
	if len(stale) > 0 {
		r := &marksRead{apps: stale, heldAt: make([]int64, len(stale)), done: make(chan struct{})}
		streams := make([]string, len(stale))
		for i, app := range stale {
			streams[i], r.heldAt[i] = ps.apps[app].stream, ps.apps[app].held
		}
		ps.reading = r
		go func() {
			defer close(r.done)
			r.held, r.drained, r.err = fs.store.Marks(ctx, streams)
		}()
	}
	grants, err := fs.take(ctx, b.Topic, ps, decoded, cfg)
	if err != nil {
		return nil, nil, err
	}
	for app := range seen { // the grants kept with each app's state: one look-up per event below
		st := ps.apps[app]
		st.grant = -1
		if g, ok := grants[app]; ok {
			st.grant = g
		}
	}
	ps.decay(now)
	why := make([]string, len(decoded))
	raised := map[string]int64{}
	for i, d := range decoded {
		app, m := d.Event.AppID, d.Msg
		st := ps.apps[app]
		st.recent++
		ps.total++
		if st.reason == "" {
			if st.grant == 0 {
				st.reason = HeldQuota
			}
			st.grant--
			if st.reason == "" && cfg.SaturatedAfter > 0 && now.Sub(m.Time) > cfg.SaturatedAfter && ps.overShare(app, st, cfg) {
				st.reason = HeldShare
			}
		}
		if st.reason != "" {
			why[i] = st.reason
			st.held = max(st.held, m.Offset)
			raised[st.stream] = st.held
		}
	}
	if len(raised) == 0 {
		return why, nil, nil
	}
	return why, raised, nil
}

// take asks the quota buckets for the events of each app with a quota that
// the batch would route now, and returns what each was granted.
func (fs *fairShare) take(ctx context.Context, topic string, ps *partState, decoded []stage.Decoded[*schemas.Publish], cfg config.FairShare) (map[int64]int, error) {
	want := map[int64]int{} // -1: nothing asked (held, or no quota)
	var apps []int64
	for _, d := range decoded {
		app := d.Event.AppID
		n, ok := want[app]
		switch {
		case !ok && (ps.apps[app].reason != "" || cfg.Quota(app) == 0): // looked up once per app and batch
			want[app] = -1
			continue
		case !ok:
			apps = append(apps, app)
		case n < 0:
			continue
		}
		want[app] = n + 1
	}
	if len(apps) == 0 {
		return nil, nil
	}
	// Tokens are taken a tenth of a second of the quota ahead and kept
	// with the partition, so that a batch rarely waits for Redis; taken
	// tokens are spent tokens, so the quota still holds across processes.
	grants := make(map[int64]int, len(apps))
	var reqs []store.QuotaTake
	var asked []int64
	for _, app := range apps {
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
		st.reason = ""
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

// spillRecord is the spill topic's copy of m, read at inc: its key, value
// and headers, and where it was read.
func spillRecord(topic string, m *kafka.Message, inc string) kafka.Message {
	h := make([]kafka.Header, 0, len(m.Headers)+4)
	h = append(h, m.Headers...)
	h = append(h,
		kafka.Header{Key: HeaderOriginTopic, Value: []byte(m.Topic)},
		kafka.Header{Key: HeaderOriginPartition, Value: strconv.AppendInt(nil, int64(m.Partition), 10)},
		kafka.Header{Key: HeaderOriginOffset, Value: strconv.AppendInt(nil, m.Offset, 10)})
	if inc != "" {
		h = append(h, kafka.Header{Key: HeaderOriginInc, Value: []byte(inc)})
	}
	return kafka.Message{Topic: topic, Key: m.Key, Value: m.Value, Headers: h}
}

// origin returns where a spill record's event was read: a copy of m with
// that topic, partition and offset, and its incarnation.
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
// when the spill partition's batch does not start where the last ended).
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

// drainWait takes the quota tokens of a drained batch's events (going into
// debt: the quota buckets are shared with the lanes, which then hold the
// app back until it is paid) and returns how long to wait before routing
// them.
func (fs *fairShare) drainWait(ctx context.Context, counts map[appLane]int) (time.Duration, error) {
	cfg := fs.config()
	var reqs []store.QuotaTake
	for k, n := range counts {
		if cfg.Quota(k.app) > 0 {
			r := quotaTake(k.app, k.lane, n, cfg)
			r.Reserve = true
			reqs = append(reqs, r)
		}
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

// appMetrics are the per-app series, for the top apps by volume and
// app="other" (fanout.fair_share.top_apps).
type appMetrics struct {
	events *prometheus.CounterVec   // {app, lane, path}
	delay  *prometheus.HistogramVec // {app, lane}
	heldG  *prometheus.GaugeVec     // {app, reason}
	top    *obs.TopApps
}

func newAppMetrics(top int, now func() time.Time) *appMetrics {
	a := &appMetrics{
		events: obs.CounterVec("imstream_app_events_total",
			"Publish events by app (the top apps by volume, the rest as other), lane, and path: routed (at once), held (written to the spill topic), drained (routed from it).", "app", "lane", "path"),
		delay: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "imstream_app_delay_seconds",
			Help:    "Time from an event's ts to its routing by the fanout, by app (top apps, the rest as other) and lane.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300}}, []string{"app", "lane"}),
		heldG: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "imstream_app_held",
			Help: "Lane partitions of this process holding an app back, by app (top apps, the rest as other) and reason (quota, share)."}, []string{"app", "reason"}),
	}
	a.top = obs.NewTopApps(top, now, a.events, a.delay, a.heldG)
	a.zero()
	return a
}

// zero exports the other apps' series at 0, so that the families exist
// from the start.
func (a *appMetrics) zero() {
	for _, lane := range []string{"online", "bulk"} {
		for _, path := range []string{"routed", "held", "drained"} {
			a.events.WithLabelValues(obs.Other, lane, path)
		}
		a.delay.WithLabelValues(obs.Other, lane)
	}
	for _, r := range []string{HeldQuota, HeldShare} {
		a.heldG.WithLabelValues(obs.Other, r)
	}
}

// label is app's label value (obs.TopApps).
func (a *appMetrics) label(app int64, n int) string { return a.top.Label(app, n) }

// routed counts events of one app and lane by path, with their delays
// (ts in unix ms; 0 for none).
func (a *appMetrics) routed(app int64, lane, path string, ts []int64, now time.Time) {
	l := a.label(app, len(ts))
	a.events.WithLabelValues(l, lane, path).Add(float64(len(ts)))
	if path == "held" {
		return
	}
	h := a.delay.WithLabelValues(l, lane)
	for _, t := range ts {
		if t > 0 {
			h.Observe(math.Max(0, now.Sub(time.UnixMilli(t)).Seconds()))
		}
	}
}

// held sets the held gauge from the partitions holding each app back.
func (a *appMetrics) held(by map[heldKey]int) {
	sum := map[[2]string]int{}
	for k, n := range by {
		sum[[2]string{a.label(k.app, 0), k.reason}] += n
	}
	a.heldG.Reset()
	a.zero()
	for k, n := range sum {
		a.heldG.WithLabelValues(k[0], k[1]).Set(float64(n))
	}
}
