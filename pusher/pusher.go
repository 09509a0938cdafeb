// Package pusher is the offline-push sink: it consumes push jobs from
// imr.push and appends docs/protocol.md §5 entries to the Redis lists existing push
// services read (push_queue, group_push_queue, customer_push_queue,
// customer_push_queue_v2, system_push_queue, with _<appid> suffixes for ROM
// apps).
//
// Batches: the consume loop hands over up to pusher.batch_size records
// that are already waiting (flushing at once when nothing more is waiting,
// and after pusher.flush_interval at the latest); each batch is one pipeline
// with one atomic script per list and source partition. Exactly once: each
// list keeps a watermark per source partition (the publish partition the
// fanout read, carried in the job's src) written in the same script as the
// RPUSH, so a replay — of imr.push or of the fanout — appends nothing twice. Offsets are committed only after Redis
// acknowledged. While Redis is down the batch is retried with back-off;
// nothing is dropped. Bad records go to the dead-letter topic with a reason.
//
// Metrics (besides the shared ones in internal/plumbing/obs, stage="pusher"):
//
//	imstream_push_list_length{list}            entries waiting in a push list (LLEN at scrape time)
//	imstream_push_entries_total{list}          entries appended to a list (Redis acknowledged); repeats the
//	                                           watermark dropped count as imstream_skipped_total{stage="pusher",reason="repeat"}
package pusher

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"

	"github.com/imstream/imstream/internal/plumbing/config"
	"github.com/imstream/imstream/internal/plumbing/kafkax"
	"github.com/imstream/imstream/internal/plumbing/obs"
	"github.com/imstream/imstream/internal/plumbing/stage"
	"github.com/imstream/imstream/schemas"
	"github.com/imstream/imstream/store"
)

// Stage is the name used in metrics and dead-letter headers.
const Stage = "pusher"

// Pusher is the push-list sink stage.
type Pusher struct {
	cfg      config.Pusher
	env      stage.Env
	sink     Sink
	presence store.PresenceStore // for member-range jobs
	groups   store.GroupStore
	enc      Encoder
	core     *stage.Core
	log      *slog.Logger
	entries  *prometheus.CounterVec
}

// New builds the stage from its section, the process's env, the sink it
// appends to and the stores it reads for member-range jobs (a big group's
// members and their presence); lengths, when not nil, is read at scrape
// time for imstream_push_list_length. Run starts it.
func New(cfg config.Pusher, env stage.Env, sink Sink, ps store.PresenceStore, gs store.GroupStore, lengths redis.UniversalClient) (*Pusher, error) {
	core, err := stage.Declare(&env, stage.Declaration{Name: Stage,
		Needs: []stage.Need{{Name: "Sink", OK: sink != nil}, {Name: "Presence", OK: ps != nil}, {Name: "Groups", OK: gs != nil}},
		Input: stage.Input{Group: cfg.Group, Topics: []string{env.Kafka.Topics.Push}, Kind: schemas.KindPushJob,
			MaxBatch: cfg.BatchSize, MaxWait: cfg.FlushInterval}})
	if err != nil {
		return nil, err
	}
	rom := make(map[int64]bool, len(cfg.ROMApps))
	for _, a := range cfg.ROMApps {
		rom[a] = true
	}
	p := &Pusher{
		cfg:      cfg,
		env:      env,
		sink:     sink,
		presence: ps,
		groups:   gs,
		enc:      Encoder{ROMApps: rom, SystemPush: cfg.SystemPush},
		log:      env.Logger.With("stage", Stage),
		entries: obs.CounterVec("imstream_push_entries_total",
			"Offline-push entries acknowledged by Redis, by list (without the ROM suffix).", "list"),
	}
	for _, l := range []string{ListPeer, ListGroup, ListCustomer, ListCustomerV2, ListSystem} {
		p.entries.WithLabelValues(l) // exported at 0 from the start
	}
	if err := env.Register(p.entries); err != nil {
		return nil, fmt.Errorf("pusher: metrics: %w", err)
	}
	if lengths != nil {
		if err := env.Register(&listLengths{rc: lengths, lists: p.lists()}); err != nil {
			return nil, fmt.Errorf("pusher: metrics: %w", err)
		}
	}
	p.core = core
	env.Metrics.Known(env.Metrics.Skipped, Stage, "repeat", "system_push_disabled", "receiver_online", "unknown_group")
	env.Metrics.KnownSinks("push_list")
	env.Metrics.KnownRedis(Stage, "append")
	return p, nil
}

// Run consumes imr.push until ctx ends. It creates the topics first when
// kafka.auto_create_topics is set.
func (p *Pusher) Run(ctx context.Context) error { return stage.Run(ctx, p.core, p.write) }

// write turns a batch of push jobs into entries and appends them to their lists.
func (p *Pusher) write(ctx context.Context, b stage.Batch, records []stage.Decoded[schemas.Event]) ([]stage.Rejected, error) {
	if err := p.resolveRanges(ctx, records); err != nil {
		return nil, err
	}
	entries := make([]Entry, 0, len(records))
	skipped := 0
	add := func(job *schemas.PushJob, m *kafka.Message) {
		if len(job.Receivers) == 0 { // a member-range job with no offline member (counted by resolveRanges)
			return
		}
		n := len(entries)
		entries = p.enc.Append(entries, job, m.Topic, string(b.Inc), m.Partition, m.Offset)
		if len(entries) == n {
			skipped++
		}
	}
	for i, r := range records {
		kafkax.Yield(i)
		switch ev := r.Event.(type) {
		case *schemas.PushJob:
			add(ev, r.Msg)
		case *schemas.PushJobs:
			for k, job := range ev.Jobs {
				if job.Src == nil { // positions of jobs without a source: the record's, numbered
					job.Src = &schemas.Source{Topic: r.Msg.Topic, Partition: r.Msg.Partition, Offset: r.Msg.Offset, Index: k, Inc: string(b.Inc)}
				}
				add(job, r.Msg)
			}
		}
	}
	if len(entries) > 0 {
		start := time.Now()
		err := p.sink.Append(ctx, entries)
		now := time.Now()
		p.env.Metrics.ObserveRedis(Stage, "append", now.Sub(start), err)
		if err != nil {
			return nil, err
		}
		written, repeats := entries, 0
		e2e := p.env.Metrics.E2EFor("push_list")
		for i := range entries {
			if entries[i].Written {
				e2e.Observe(entries[i].TS, now)
			} else {
				repeats++
			}
		}
		if repeats > 0 {
			written = make([]Entry, 0, len(entries)-repeats)
			for _, e := range entries {
				if e.Written {
					written = append(written, e)
				}
			}
		}
		obs.CountBy(p.entries, written, func(e Entry) string { return e.Kind })
		if repeats > 0 {
			p.env.Metrics.Skipped.WithLabelValues(Stage, "repeat").Add(float64(repeats))
		}
	}
	if skipped > 0 {
		p.env.Metrics.Skipped.WithLabelValues(Stage, "system_push_disabled").Add(float64(skipped))
	}
	return nil, nil
}
