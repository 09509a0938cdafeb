// Package fanout is the routing stage: it consumes imr.publish (the online
// lane) and imr.publish.bulk (the bulk lane: push events), decides per
// event what im_service's router would do (docs/protocol.md §4; Decide), and writes
// deliveries to imr.deliver.<server> and offline-push jobs to imr.push.
//
// Each batch (one partition, in order) is decided on one View filled with
// pipelined look-ups (package store, read-only), then all outputs are
// written in one produce call; offsets are committed only after the brokers
// acknowledged them. A replay re-produces outputs with the same source
// coordinates: deliveries carry src {topic, partition, offset} so an IM
// server drops repeats, and push jobs carry src (+ index) so the pusher's
// watermarks drop them. Push jobs of one source partition all go to one
// imr.push partition (source partition mod partitions), which keeps their
// order; deliveries are keyed by the event's key, which keeps each
// receiver's order.
//
// Metrics (besides the shared ones, stage="fanout"):
//
//	imstream_fanout_outputs_total{kind}   records produced: deliver, push_job
//	imstream_skipped_total{stage="fanout",reason}   unknown_group, not_pushable, spill_repeat (fair share: a held
//	                                      event spilled twice after a crash, skipped by the drainer)
//	imstream_app_events_total{app,lane,path}        publish events by app (top apps, the rest as other): routed, held, drained
//	imstream_app_delay_seconds{app,lane}            an event's ts to its routing, by app
//	imstream_app_held{app,reason}                   lane partitions holding an app back (fair share: quota, share)
//
// Events with route "imr" (the gateway's, by default) are decided by
// im_service's router's rules instead (decideIMR).
package fanout

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/imstream/imstream/internal/plumbing/config"
	"github.com/imstream/imstream/internal/plumbing/kafkax"
	"github.com/imstream/imstream/internal/plumbing/obs"
	"github.com/imstream/imstream/internal/plumbing/stage"
	"github.com/imstream/imstream/internal/plumbing/tick"
	"github.com/imstream/imstream/schemas"
	"github.com/imstream/imstream/store"
)

// Stage is the name used in metrics and dead-letter headers.
const Stage = "fanout"

// Fanout is the routing stage.
type Fanout struct {
	cfg      config.Fanout
	env      stage.Env
	presence store.PresenceStore
	groups   store.GroupStore
	opts     Options
	log      *slog.Logger
	core     *stage.Core
	w        *kafka.Writer // the online lane's outputs, written at once
	wb       *kafka.Writer // the bulk lane's, batched (kafka.linger)
	outputs  *prometheus.CounterVec

	jobHeaders []kafka.Header // on imr.push records: stage.HeaderMaxBytes

	mu     sync.Mutex
	topics map[string]bool // deliver topics known to exist

	apps        *appMetrics            // per-app series (fair share)
	lostOffsets *prometheus.CounterVec // fair share's imstream_fair_share_lost_offsets_total
	fair        *fairShare             // nil unless fanout.fair_share.enabled
	drain       *stage.Core            // the spill topic's consumer, in processes that consume the bulk lane
}

// lanes are the topics of the lanes cfg names (fanout.lanes); with one
// lane configured (kafka.topics.bulk = kafka.topics.publish) that topic.
func lanes(cfg config.Fanout, t config.Topics) []string {
	if t.OneLane() {
		return t.Lanes()
	}
	var out []string
	if cfg.Consumes("online") {
		out = append(out, t.Publish)
	}
	if cfg.Consumes("bulk") {
		out = append(out, t.Bulk)
	}
	return out
}

// outputs are the topics the fanout creates at start: imr.push, and the
// spill topic with fair share.
func outputs(t config.Topics, fairShare bool) []string {
	if fairShare {
		return []string{t.Push, t.Spill}
	}
	return []string{t.Push}
}

// New builds the stage from its section, the process's env and the stores
// it reads (through their interfaces, never the stages that write them) and
// the store of fair share's marks (needed only with fair share); Run
// starts it.
func New(cfg config.Fanout, env stage.Env, ps store.PresenceStore, gs store.GroupStore, spill store.SpillStore) (*Fanout, error) {
	k := env.Kafka
	fairShare := cfg.FairShare.Enabled
	core, err := stage.Declare(&env, stage.Declaration{Name: Stage,
		Needs: []stage.Need{{Name: "Presence", OK: ps != nil}, {Name: "Groups", OK: gs != nil}, {Name: "SpillStore", OK: spill != nil || !fairShare}},
		Input: stage.Input{Group: cfg.Group, Topics: lanes(cfg, k.Topics), Create: outputs(k.Topics, fairShare), Kind: schemas.KindPublish, MaxBatch: cfg.BatchSize}})
	if err != nil {
		return nil, err
	}
	f := &Fanout{
		cfg: cfg, env: env, presence: ps, groups: gs, log: env.Logger.With("stage", Stage),
		opts:    Options{SyncGroupNotifyAll: cfg.SyncGroupNotifyAll, GroupChunk: cfg.GroupChunk},
		topics:  map[string]bool{},
		outputs: obs.CounterVec("imstream_fanout_outputs_total", "Records produced by the fanout, by kind (deliver, push_job).", "kind"),
	}
	if err := env.Register(f.outputs); err != nil {
		return nil, err
	}
	f.w = kafkax.NoLinger(env.Conn.NewWriter(env.Kafka, ""))
	f.w.Balancer = &OutputBalancer{PushTopic: env.Kafka.Topics.Push}
	f.wb = env.Conn.NewWriter(env.Kafka, "")
	f.wb.Balancer = f.w.Balancer
	f.jobHeaders = []kafka.Header{{Key: stage.HeaderMaxBytes, Value: []byte(strconv.Itoa(f.limit()))}}
	if env.Kafka.Binary() {
		f.jobHeaders = append(f.jobHeaders, kafka.Header{Key: schemas.HeaderFormat, Value: []byte(schemas.FormatBinary)})
	}
	f.core = core
	env.Metrics.Known(env.Metrics.Rejected, Stage, ReasonOutputRefused)
	env.Metrics.Known(env.Metrics.Refused, Stage, env.Kafka.Topics.Push)
	env.Metrics.Known(env.Metrics.Skipped, Stage, "unknown_group", "not_pushable")
	env.Metrics.KnownSinks("deliver_topic")
	f.outputs.WithLabelValues("deliver")
	f.outputs.WithLabelValues("push_job")
	// The per-app families exist without fair share too (at 0), for the
	// dashboard and the alerts.
	f.apps = newAppMetrics(cfg.FairShare.TopApps, time.Now)
	f.lostOffsets = newLostOffsets()
	if err := env.Register(f.apps.events, f.apps.delay, f.apps.heldG, f.lostOffsets); err != nil {
		return nil, err
	}
	f.lostOffsets.WithLabelValues("retention")
	f.lostOffsets.WithLabelValues("log_restarted")
	if fairShare {
		if err := f.fairShare(cfg, spill); err != nil {
			return nil, err
		}
	}
	return f, nil
}

// fairShare sets up fair share: its state, metrics and, in a process that
// consumes the bulk lane, the drainer of the spill topic (consumer group
// <fanout.group>-spill).
func (f *Fanout) fairShare(cfg config.Fanout, spill store.SpillStore) error {
	k := f.env.Kafka
	now := time.Now
	f.fair = &fairShare{store: spill, now: now, m: f.apps, cfg: cfg.FairShare,
		lane: f.lane, state: map[partKey]*partState{}, drained: map[string]int64{},
		spillPos: map[partKey]int64{}, spillTopic: k.Topics.Spill,
		readers:     &rangeReaders{conn: f.env.Conn, maxBytes: f.env.Consumer.MaxFetchBytes, rs: map[partKey]*rangeReader{}},
		lostOffsets: f.lostOffsets}
	f.w.Balancer.(*OutputBalancer).SpillTopic = k.Topics.Spill
	f.env.Metrics.Known(f.env.Metrics.Skipped, Stage, "spill_repeat")
	if !k.Topics.OneLane() && !cfg.Consumes("bulk") {
		return nil
	}
	env := f.env
	drain, err := stage.Declare(&env, stage.Declaration{Name: Stage,
		Input: stage.Input{Group: cfg.Group + "-spill", Topics: []string{k.Topics.Spill}, Kind: schemas.KindPublish, MaxBatch: min(cfg.BatchSize, 100), Prepare: true,
			// The drainer routes at the held apps' quotas: reading further
			// ahead only holds memory (and the collector's time) for a
			// backlog that waits in the topic as well.
			QueueSize: 4 * min(cfg.BatchSize, 100)}})
	if err != nil {
		return err
	}
	f.drain = drain
	return nil
}

// SetFairShare replaces fair share's quotas and weights (a configuration
// reload); without fair share it does nothing.
func (f *Fanout) SetFairShare(c config.FairShare) {
	if f.fair != nil {
		f.fair.setConfig(c)
	}
}

// Run consumes both lanes, imr.publish and imr.publish.bulk, until ctx
// ends. Every partition of either has its own fetcher and worker, and each
// lane its own writer, so an online batch never waits behind a bulk one:
// not in a partition queue, not in a produce batch.
func (f *Fanout) Run(ctx context.Context) error {
	defer f.w.Close()
	defer f.wb.Close()
	if f.fair != nil {
		gctx, stop := context.WithCancel(ctx)
		defer stop()
		var quiet tick.Quiet
		go tick.Every(gctx, 5*time.Second, func() {
			if err := f.fair.countHeld(gctx); err != nil && gctx.Err() == nil {
				if ok, held := quiet.Allow("marks", time.Minute); ok {
					f.log.Warn("fair share: cannot read the marks for imstream_app_held; it keeps its last value", "err", err, "repeats", held)
				}
			}
		})
	}
	if f.drain == nil {
		return stage.RunRaw(ctx, f.core, f.route)
	}
	defer f.fair.readers.close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, 1)
	go func() {
		errs <- stage.RunRaw(ctx, f.drain, f.drainSpill)
		cancel()
	}()
	err := stage.RunRaw(ctx, f.core, f.route)
	cancel()
	return errors.Join(err, <-errs)
}

// lane names the lane of topic: "online" or "bulk".
func (f *Fanout) lane(topic string) string {
	if f.env.Kafka.Topics.IsBulkLane(topic) {
		return "bulk"
	}
	return "online"
}

// writer returns the writer of the lane topic belongs to.
func (f *Fanout) writer(topic string) *kafka.Writer {
	if f.env.Kafka.Topics.IsBulkLane(topic) {
		return f.wb
	}
	return f.w
}

// route routes a batch of a lane: each event now, unless fair share holds
// its app back (decided from the records' keys, before anything is
// decoded). Held records are neither decoded nor copied: the partition's
// spiller writes references to them (spillRef) after the batch is routed,
// and raises their marks; the next batch need not wait for that, its
// commit does.
func (f *Fanout) route(ctx context.Context, b stage.Batch) ([]stage.Rejected, error) {
	var h holding
	if f.fair != nil {
		var err error
		if h, err = f.fair.decide(ctx, b); err != nil {
			return nil, err
		}
	}
	decoded, rejected := stage.Decode[*schemas.Publish](f.core, b.Records, h.skip)
	src := make([]routed, len(decoded))
	for i, d := range decoded {
		src[i] = routed{m: d.Msg, inc: string(b.Inc)}
	}
	w := f.writer(b.Topic)
	more, err := f.routeEvents(ctx, w, decoded, src)
	if err != nil {
		return nil, err
	}
	rejected = append(rejected, more...)
	if f.fair == nil {
		return rejected, nil
	}
	sp := f.fair.done(b)
	f.countApps(b.Topic, decoded, src, time.Now())
	for _, r := range h.refs {
		f.fair.m.count(r.App, f.lane(b.Topic), "held", r.Held)
	}
	if len(h.refs) == 0 {
		return rejected, nil
	}
	job := sp.submit(ctx, w, h.refs, h.marks)
	if !b.Later(job.wait) { // not from the consume loop: wait here
		if err := job.wait(); err != nil {
			sp.clear() // nothing in flight: the retry writes it again
			return nil, err
		}
	}
	return rejected, nil
}

// routed is how routeEvents takes one event: m, the record whose
// coordinates its outputs carry (the one read, or for a drained event the
// one it was held back at), read at incarnation inc.
type routed struct {
	m   *kafka.Message
	inc string
}

// countApps counts a batch's events per app and path in the per-app
// metrics.
func (f *Fanout) countApps(topic string, decoded []stage.Decoded[*schemas.Publish], src []routed, now time.Time) {
	type key struct {
		app        int64
		bulk, path uint8 // path: routed, drained
	}
	paths, lanes := [...]string{"routed", "drained"}, [...]string{"online", "bulk"} // as f.lane names them
	drained := uint8(0)
	if topic == f.env.Kafka.Topics.Spill {
		drained = 1
	}
	type group struct {
		app  int64
		lane string
		path string
		ts   []int64
	}
	idx := map[key]int{}
	var groups []group
	for i, d := range decoded {
		k := key{app: d.Event.AppID, path: drained}
		if f.env.Kafka.Topics.IsBulkLane(src[i].m.Topic) {
			k.bulk = 1
		}
		j, ok := idx[k]
		if !ok {
			j = len(groups)
			idx[k] = j
			groups = append(groups, group{app: k.app, lane: lanes[k.bulk], path: paths[k.path]})
		}
		groups[j].ts = append(groups[j].ts, d.Event.TS)
	}
	for _, g := range groups {
		f.fair.m.routed(g.app, g.lane, g.path, g.ts, now)
	}
}
