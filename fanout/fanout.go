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
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"slices"
	"strconv"
	"strings"
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

// routeEvents decides and writes the outputs of decoded (src: how each is
// taken) in one produce call through w.
func (f *Fanout) routeEvents(ctx context.Context, w *kafka.Writer, decoded []stage.Decoded[*schemas.Publish], src []routed) ([]stage.Rejected, error) {
	view, err := load(ctx, stage.Events(decoded), f.presence, f.groups, f.opts, time.Now())
	if err != nil {
		return nil, err
	}
	var out []kafka.Message
	var from [][]int // the inputs (indexes in decoded) each record derives from
	var rejected []stage.Rejected
	newTopics := map[string]int{}
	delivers, jobs := 0, 0
	var deliveredTS []int64 // ts of the events delivered
	pj := jobRecords{topic: f.env.Kafka.Topics.Push, together: f.cfg.BatchPushJobs, limit: f.limit(), headers: f.jobHeaders, binary: f.env.Kafka.Binary()}
	spec := jobSpec{limit: f.limit(), chunk: f.opts.GroupChunk, binary: f.env.Kafka.Binary()}
	presenceAt := kafka.Header{Key: HeaderPresenceAt, Value: strconv.AppendInt(nil, view.at.UnixMilli(), 10)}
	pj.headers = append(pj.headers[:len(pj.headers):len(pj.headers)], presenceAt)
	// The decisions' bytes and the deliveries' headers are cut from one
	// buffer each per batch (a slice cut before a buffer grows keeps the
	// old array), not allocated per event.
	texts := make([]byte, 0, 48*len(decoded))
	headers := make([]kafka.Header, 0, 3*len(decoded))
	for i, d := range decoded {
		ev, m := d.Event, src[i].m
		plan := Decide(ev, view, f.opts)
		if plan.Skip != "" {
			f.env.Metrics.Skipped.WithLabelValues(Stage, plan.Skip).Inc()
		}
		spec.inc = src[i].inc
		js, err := spec.jobsOf(ev, plan, m)
		if err != nil {
			rejected = append(rejected, stage.Rejected{Msg: *d.Msg, Code: schemas.ReasonOversize, Reason: err.Error()})
			continue
		}
		var trace []kafka.Header
		decision := kafka.Header{Key: HeaderDecision}
		if len(plan.Deliver) > 0 || len(js) > 0 {
			trace = traceHeaders(m, ev, src[i].inc, f.cfg.Traceparent == "derived")
			n := len(texts)
			texts = AppendDescribe(texts, ev, plan, view, f.opts)
			decision.Value = texts[n:len(texts):len(texts)]
		}
		if len(plan.Deliver) > 0 {
			n := len(headers)
			headers = append(append(headers, trace...), decision, presenceAt)
			hs := headers[n:len(headers):len(headers)]
			value := deliverRecord(ev, m, src[i].inc)
			input := []int{i}
			for _, server := range plan.Deliver {
				topic := f.env.Kafka.Topics.DeliverPrefix + server
				if !f.known(topic) {
					newTopics[topic] = f.env.Kafka.DeliverPartitions
				}
				out = append(out, kafka.Message{Topic: topic, Key: m.Key, Value: value, Headers: hs})
				from = append(from, input)
			}
			delivers += len(plan.Deliver)
			deliveredTS = append(deliveredTS, ev.TS)
		}
		for _, j := range js {
			pj.add(&ev.Header, j, i, trace, decision)
		}
		jobs += len(js)
	}
	out, from = pj.records(out, from)
	if len(newTopics) > 0 {
		created, err := f.env.Conn.CreateTopics(ctx, f.env.Kafka.ReplicationFactor, newTopics)
		if err != nil {
			return nil, err
		}
		f.mu.Lock()
		for t := range newTopics {
			f.topics[t] = true
		}
		f.mu.Unlock()
		if len(created) > 0 { // the others existed (another process, or an earlier run, made them)
			f.log.Info("created deliver topics", "topics", created)
		}
	}
	start := time.Now()
	var refused map[int]error
	if len(out) > 0 {
		refused, err = kafkax.WriteRefusing(ctx, w, out...)
	}
	done := time.Now()
	if err != nil {
		if kafkax.UnknownTopic(err) {
			// A deliver topic went away (deleted, or a cluster that lost its
			// data): create the batch's topics again on the retry.
			f.mu.Lock()
			clear(f.topics)
			f.mu.Unlock()
		}
		return nil, err
	}
	rejected = append(rejected, f.refusedInputs(decoded, out, from, refused)...)
	f.env.Metrics.Produce.WithLabelValues(Stage).Observe(done.Sub(start).Seconds())
	f.outputs.WithLabelValues("deliver").Add(float64(delivers))
	f.outputs.WithLabelValues("push_job").Add(float64(jobs))
	if len(deliveredTS) > 0 { // the events delivered, not the batch's others (push jobs only)
		e2e := f.env.Metrics.E2EFor("deliver_topic")
		for _, ts := range deliveredTS {
			e2e.Observe(ts, done)
		}
	}
	return rejected, nil
}

// ReasonOutputRefused dead-letters an input one of whose outputs the
// brokers refused for a reason no retry fixes (too large, invalid).
const ReasonOutputRefused = "output_refused"

// refusedInputs returns the dead letters of the inputs whose outputs were
// refused (each input once), logged and counted (imstream_rejected_records_total
// reason output_refused, imstream_outputs_refused_total{stage,topic}). Its
// other outputs were written: a re-drive, a new event at a new offset,
// writes them again with a new src (docs/runbook.md).
func (f *Fanout) refusedInputs(decoded []stage.Decoded[*schemas.Publish], out []kafka.Message, from [][]int, refused map[int]error) []stage.Rejected {
	if len(refused) == 0 {
		return nil
	}
	why := map[int]string{}
	var order []int
	for o, err := range refused {
		f.env.Metrics.OutputRefused(Stage, out[o].Topic, err.Error())
		for _, i := range from[o] {
			if _, ok := why[i]; !ok {
				order = append(order, i)
				why[i] = fmt.Sprintf("%s record of %d bytes: %v", out[o].Topic, len(out[o].Value), err)
			}
		}
	}
	slices.Sort(order)
	rs := make([]stage.Rejected, 0, len(order))
	for _, i := range order {
		m := decoded[i].Msg
		f.log.Error("output refused by the brokers; its input goes to the dead-letter topic and the partition moves on",
			"topic", m.Topic, "partition", m.Partition, "offset", m.Offset, "reason", why[i])
		rs = append(rs, stage.Rejected{Msg: *m, Code: ReasonOutputRefused, Reason: why[i]})
	}
	return rs
}

// limit is the size every record the fanout writes stays under.
func (f *Fanout) limit() int {
	if l := f.env.Kafka.MaxRecordBytes; l > 0 {
		return l
	}
	return 256 << 10
}

func (f *Fanout) known(topic string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.topics[topic]
}

// withSource returns the event's JSON with src appended, keeping every byte
// the producer wrote (unknown fields, msg.raw).
func withSource(value []byte, topic string, partition int, offset int64, inc string) []byte {
	end := len(value) - 1
	for end >= 0 && value[end] != '}' {
		end--
	}
	b := make([]byte, 0, end+96+len(topic)+len(inc))
	b = append(b, value[:end]...)
	b = append(b, `,"src":{"topic":`...)
	b = strconv.AppendQuote(b, topic)
	b = append(b, `,"partition":`...)
	b = strconv.AppendInt(b, int64(partition), 10)
	b = append(b, `,"offset":`...)
	b = strconv.AppendInt(b, offset, 10)
	if inc != "" {
		b = append(b, `,"inc":`...)
		b = strconv.AppendQuote(b, inc)
	}
	return append(b, "}}"...)
}

// deliverRecord is the deliver record of the event read from m: its JSON
// with src. Deliveries are read by IM servers, so they are JSON whatever
// the input's format; a JSON input is kept as the producer wrote it.
func deliverRecord(ev *schemas.Publish, m *kafka.Message, inc string) []byte {
	if stage.Format(m) == "" {
		return withSource(m.Value, m.Topic, m.Partition, m.Offset, inc)
	}
	d := *ev
	d.Src = &schemas.Source{Topic: m.Topic, Partition: m.Partition, Offset: m.Offset, Inc: inc}
	return d.AppendJSON(make([]byte, 0, 2*len(m.Value)+256))
}

// jobSpec is how the fanout writes the push jobs of a batch.
type jobSpec struct {
	inc    string // the source partition's incarnation
	limit  int    // kafka.max_record_bytes
	chunk  int    // fanout.group_chunk: members per member-range job
	binary bool   // kafka.internal_format binary
}

// pushJob builds the idx-th push job of the event read from m. Its key names
// the source partition, which the output balancer maps to an imr.push
// partition.
func (s jobSpec) pushJob(ev *schemas.Publish, receivers, memberRange []int64, m *kafka.Message, idx int) kafka.Message {
	msg := ev.Msg
	msg.Raw = nil // the pusher does not need the frame
	h := ev.Header
	h.Type = schemas.TypePushJob
	job := schemas.PushJob{Header: h, Receivers: receivers, Msg: msg, MemberRange: memberRange,
		Src: &schemas.Source{Topic: m.Topic, Partition: m.Partition, Offset: m.Offset, Index: idx, Inc: s.inc}}
	key := []byte(m.Topic + ":" + strconv.Itoa(m.Partition))
	if s.binary {
		return kafka.Message{Key: key, Value: job.AppendBinary(make([]byte, 0, 128+len(msg.Content)+(len(receivers)*10)))}
	}
	return kafka.Message{Key: key, Value: job.AppendJSON(make([]byte, 0, 256+(len(receivers)*20)))}
}

// maxJobs is how many push jobs one event may yield: a job's position is
// its source offset << 16 | its index (package pusher).
const maxJobs = 1 << 16

// jobsOf returns the push jobs of ev's plan, numbered from 0: each list of
// plan.Push as one job, cut into several where it would be over limit
// bytes, and a big group as member-range jobs of about chunk members each
// (bounds taken from its sorted member list; the first and last ranges
// are open, so that every uid falls in exactly one range whatever the
// membership is when the pusher resolves them). An event that would need
// more than maxJobs jobs is an error.
func (s jobSpec) jobsOf(ev *schemas.Publish, plan Plan, m *kafka.Message) ([]kafka.Message, error) {
	limit, chunk := s.limit, s.chunk
	if len(plan.Push) == 0 && plan.BigGroup == nil {
		return nil, nil
	}
	var jobs []kafka.Message
	n := 0
	for _, rs := range plan.Push {
		n += len(rs)
	}
	// A job is at most its event's msg and header re-encoded, src, and
	// receivers of at most 20 bytes each. Re-encoded in JSON, a JSON input
	// grows at most 6 times (escapes) and a binary one at most 12 (a field
	// of 2 bytes, tag and value, is at most `,"customer_appid":-63`);
	// re-encoded in binary, neither grows.
	grow := 6
	if stage.Format(m) != "" && !s.binary {
		grow = 12
	}
	if len(plan.Push) > 0 && grow*len(m.Value)+512+20*n <= limit {
		// The common case: every list is one job.
		for _, rs := range plan.Push {
			jobs = append(jobs, s.pushJob(ev, rs, nil, m, len(jobs)))
		}
	} else if len(plan.Push) > 0 {
		// The job without receivers, and room for its index to grow.
		base := len(s.pushJob(ev, []int64{}, nil, m, 0).Value) + 16
		for _, rs := range plan.Push {
			for len(rs) > 0 {
				n, size := 0, base
				for n < len(rs) {
					w := digits(rs[n]) + 1
					if n > 0 && size+w > limit {
						break
					}
					size += w
					n++
				}
				jobs = append(jobs, s.pushJob(ev, rs[:n:n], nil, m, len(jobs)))
				rs = rs[n:]
			}
		}
		if len(jobs) > 0 && len(jobs[0].Value) > limit { // its msg alone, escaped again, does not fit
			return nil, fmt.Errorf("record: its push job is %d bytes with one receiver, over kafka.max_record_bytes (%d)", len(jobs[0].Value), limit)
		}
	}
	if g := plan.BigGroup; g != nil {
		chunk = max(chunk, 1)
		if n := (len(g.Members) + chunk - 1) / chunk; len(jobs)+n > maxJobs {
			return nil, fmt.Errorf("record: a group of %d members yields %d push jobs of %d members, more than %d", len(g.Members), n, chunk, maxJobs)
		}
		for i := 0; i < len(g.Members); i += chunk {
			var from, to int64
			if i > 0 {
				from = g.Members[i]
			}
			if i+chunk < len(g.Members) {
				to = g.Members[i+chunk]
			}
			jobs = append(jobs, s.pushJob(ev, nil, []int64{from, to}, m, len(jobs)))
		}
	}
	if len(jobs) > maxJobs {
		return nil, fmt.Errorf("record: yields %d push jobs of at most %d bytes, more than %d", len(jobs), limit, maxJobs)
	}
	return jobs, nil
}

// digits is the length of v in decimal.
func digits(v int64) int {
	n := 1
	if v < 0 {
		n, v = 2, -v
	}
	for ; v >= 10; v /= 10 {
		n++
	}
	return n
}

// jobRecords gathers a batch's push jobs into imr.push records: with
// together, consecutive jobs of one key share a push_jobs record of at
// most limit bytes (a job alone stays a push_job record); without, each job
// is its record.
type jobRecords struct {
	topic    string
	together bool
	limit    int
	headers  []kafka.Header // on every record: the limit they were written under, the format, the presence read
	binary   bool           // the jobs are in the binary format
	jobs     []kafka.Message
	trace    [][]kafka.Header // each job's trace headers and HeaderDecision, for a job written alone
	decision []kafka.Header
	hbuf     []kafka.Header    // lone jobs' headers are cut from it
	first    []*schemas.Header // each job's event header: a push_jobs record takes its first job's
	input    []int             // each job's input index
}

// add adds job, derived from input, the event with header h, with its
// trace and decision headers: a record of the job alone carries r.headers
// and them, a push_jobs record of several jobs r.headers only (a header
// per job would grow the record past its size limit and cost the pusher
// as much again to read; its jobs' receivers are the offline ones their
// decisions found).
func (r *jobRecords) add(h *schemas.Header, job kafka.Message, input int, trace []kafka.Header, decision kafka.Header) {
	job.Topic = r.topic
	r.trace = append(r.trace, trace)
	r.decision = append(r.decision, decision)
	r.jobs = append(r.jobs, job)
	r.first = append(r.first, h)
	r.input = append(r.input, input)
}

// records appends the records to out, and the inputs each derives from to
// from.
func (r *jobRecords) records(out []kafka.Message, from [][]int) ([]kafka.Message, [][]int) {
	if !r.together {
		for i := range r.jobs {
			out, from = append(out, r.alone(i)), append(from, r.input[i:i+1:i+1])
		}
		return out, from
	}
	limit := r.limit - 256 // room for the record's header
	sep := 1               // a JSON job's comma
	if r.binary {
		sep = 4 // a binary job's tag and length (jobs are under 2 MiB)
	}
	for i := 0; i < len(r.jobs); {
		j, size := i+1, sep+len(r.jobs[i].Value)
		for j < len(r.jobs) && string(r.jobs[j].Key) == string(r.jobs[i].Key) && size+sep+len(r.jobs[j].Value) <= limit {
			size += sep + len(r.jobs[j].Value)
			j++
		}
		if j == i+1 {
			out = append(out, r.alone(i))
		} else {
			vals := make([][]byte, 0, j-i)
			for _, m := range r.jobs[i:j] {
				vals = append(vals, m.Value)
			}
			buf := make([]byte, 0, size+256)
			if r.binary {
				buf = schemas.AppendPushJobsBinary(buf, *r.first[i], vals)
			} else {
				buf = schemas.AppendPushJobs(buf, *r.first[i], vals)
			}
			out = append(out, kafka.Message{Topic: r.topic, Key: r.jobs[i].Key, Headers: r.headers, Value: buf})
		}
		from = append(from, r.input[i:j:j]) // an input with several jobs is named more than once
		i = j
	}
	return out, from
}

// alone is job i as a record of its own, with its headers.
func (r *jobRecords) alone(i int) kafka.Message {
	n := len(r.hbuf)
	r.hbuf = append(append(append(r.hbuf, r.headers...), r.trace[i]...), r.decision[i])
	j := r.jobs[i]
	j.Headers = r.hbuf[n:len(r.hbuf):len(r.hbuf)]
	return j
}

// OutputBalancer is where the fanout's outputs go, for every writer of
// them (the fanout, `imstream dlq redrive`): push jobs (key
// "<source topic>:<source partition>") on PushPartition, spill records on
// their SpillPartition (the event's key up to its first colon is its
// appid; the origin_partition header its source partition), everything
// else where murmur2 puts its key. SpillTopic "": no spill topic.
type OutputBalancer struct{ PushTopic, SpillTopic string }

// Balance implements kafka.Balancer.
func (o *OutputBalancer) Balance(msg kafka.Message, partitions ...int) int {
	if len(partitions) > 0 {
		k := string(msg.Key)
		switch msg.Topic {
		case o.SpillTopic:
			if appid, err := strconv.ParseInt(k[:max(strings.IndexByte(k, ':'), 0)], 10, 64); err == nil && o.SpillTopic != "" {
				p := 0
				for _, h := range msg.Headers {
					if h.Key == HeaderOriginPartition {
						p, _ = strconv.Atoi(string(h.Value))
					}
				}
				return partitions[SpillPartition(appid, p, len(partitions))]
			}
		case o.PushTopic:
			if p, err := strconv.Atoi(k[strings.LastIndexByte(k, ':')+1:]); err == nil {
				return partitions[PushPartition(p, len(partitions))]
			}
		}
	}
	return kafkax.Partitioner.Balance(msg, partitions...)
}

// PushPartition is the imr.push partition, of n, of the push jobs derived
// from source partition p: all of one source partition's on one, in order.
func PushPartition(p, n int) int { return p % max(n, 1) }

// SpillPartition is the spill topic's partition, of n, of appid's events
// held back from source partition p: murmur2 of the appid, plus p, modulo
// n. One app's held events of one source partition share a partition, in
// order; a flooding app's, held on many source partitions, spread over as
// many spill partitions: their writes go in parallel (a kafka-go writer
// has one write in flight per partition) and several drainers share them.
func SpillPartition(appid int64, p, n int) int {
	n = max(n, 1)
	return (kafkax.PartitionFor(strconv.AppendInt(nil, appid, 10), n) + p%n) % n
}

// HeaderTraceparent is the W3C trace context header, carried from an input
// record to every deliver record and push_job record derived from it.
const HeaderTraceparent = "traceparent"

// traceHeaders are the trace headers of the outputs of the event read
// from m (read at incarnation inc): the producer's traceparent when it set
// one, else (derive) one derived from the event's id (or, without one, its
// source coordinates), so that the outputs of one event share a trace id
// that tools can join with their own spans.
func traceHeaders(m *kafka.Message, ev *schemas.Publish, inc string, derive bool) []kafka.Header {
	for _, h := range m.Headers {
		if h.Key == HeaderTraceparent {
			return []kafka.Header{h}
		}
	}
	if !derive {
		return nil
	}
	if ev.ID != "" {
		return []kafka.Header{{Key: HeaderTraceparent, Value: DerivedTraceparent(ev.ID, "", 0, 0)}}
	}
	return []kafka.Header{{Key: HeaderTraceparent, Value: DerivedTraceparent(m.Topic, inc, m.Partition, m.Offset)}}
}

// DerivedTraceparent is the traceparent imstream gives an event whose
// producer set none, from its id (id alone) or its source coordinates
// (topic, inc, partition, offset): version 00, a trace id of two FNV-1a
// hashes, a span id of a third, flags 01 (sampled).
func DerivedTraceparent(id, inc string, partition int, offset int64) []byte {
	h := func(seed byte) []byte {
		f := fnv.New64a()
		f.Write([]byte{seed})
		f.Write([]byte(id))
		f.Write([]byte(inc))
		f.Write(binary.LittleEndian.AppendUint64(binary.LittleEndian.AppendUint64(make([]byte, 0, 16), uint64(partition)), uint64(offset)))
		return f.Sum(nil) // big-endian
	}
	b := make([]byte, 0, 55)
	b = append(b, "00-"...)
	b = hex.AppendEncode(b, h(1))
	b = hex.AppendEncode(b, h(2))
	b = append(b, '-')
	b = hex.AppendEncode(b, h(3))
	return append(b, "-01"...)
}
