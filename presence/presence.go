// Package presence is the presence stage: it consumes imr.presence and
// keeps, in the presence store, which users and rooms are present on which
// live IM server (layout and liveness rules: package store). It also serves
// im_service's query API, GET /online?appid=&uid=.
//
// Batches of events are applied in partition order with one pipeline;
// applying is idempotent, so a replay after a crash or rebalance changes
// nothing. Stale entries (dead servers, void epochs) are collected in the
// background every presence.gc_interval.
//
// Metrics (besides the shared ones, stage="presence"):
//
//	imstream_presence_events_total{type}   events applied, by type
//	imstream_presence_collected_total      stale entries removed by the collector
//	imstream_presence_users                users with an entry, as of the last collection pass
//	imstream_presence_rooms                rooms with an entry, as of the last collection pass
//	imstream_presence_counted_timestamp_seconds  when those two were counted (unix s)
//	imstream_presence_live_servers         IM servers whose lease runs (at scrape time; the last value read while Redis fails)
//	imstream_presence_live_servers_errors_total  scrapes at which they could not be read
//	imstream_presence_behind_seconds       how far behind now this process has applied presence
package presence

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/imstream/imstream/internal/plumbing/config"
	"github.com/imstream/imstream/internal/plumbing/obs"
	"github.com/imstream/imstream/internal/plumbing/stage"
	"github.com/imstream/imstream/internal/plumbing/tick"
	"github.com/imstream/imstream/schemas"
	"github.com/imstream/imstream/store"
)

// Stage is the name used in metrics and dead-letter headers.
const Stage = "presence"

// Presence is the presence stage.
type Presence struct {
	cfg       config.Presence
	store     store.PresenceStore
	log       *slog.Logger
	core      *stage.Core
	events    *prometheus.CounterVec
	collected prometheus.Counter
	counted   prometheus.Gauge
	users     prometheus.Gauge
	rooms     prometheus.Gauge
	behind    prometheus.Gauge
	progress  progress
}

// New builds the stage from its section, the process's env and the store
// it writes; Run starts it.
func New(cfg config.Presence, env stage.Env, st store.PresenceStore) (*Presence, error) {
	core, err := stage.Declare(&env, stage.Declaration{Name: Stage, Needs: []stage.Need{{Name: "Store", OK: st != nil}},
		Input: stage.Input{Group: cfg.Group, Topics: []string{env.Kafka.Topics.Presence}, Kind: schemas.KindPresence, MaxBatch: cfg.BatchSize}})
	if err != nil {
		return nil, err
	}
	p := &Presence{
		cfg: cfg, store: st, log: env.Logger.With("stage", Stage),
		events: obs.CounterVec("imstream_presence_events_total",
			"Presence events applied to the store, by type.", "type"),
		collected: obs.Counter("imstream_presence_collected_total", "Stale presence entries removed by the collector."),
		users:     obs.Gauge("imstream_presence_users", "Users with a presence entry, as of the last collection pass."),
		counted: obs.Gauge("imstream_presence_counted_timestamp_seconds",
			"When imstream_presence_users and imstream_presence_rooms were counted (the last collection pass), in unix seconds; 0 before the first."),
		rooms: obs.Gauge("imstream_presence_rooms", "Rooms with a presence entry, as of the last collection pass."),
		behind: obs.Gauge("imstream_presence_behind_seconds",
			"How far behind now this process has applied presence (leases are judged no later than the most behind process): grows while Redis fails or presence lags."),
	}
	liveErrs := obs.Counter("imstream_presence_live_servers_errors_total",
		"Scrapes at which the live servers could not be read (imstream_presence_live_servers then keeps its last value).")
	var last float64
	var lastMu sync.Mutex
	live := obs.GaugeFunc("imstream_presence_live_servers", "IM servers whose lease runs now (read at scrape time; the last value read while Redis fails).", func() float64 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		lastMu.Lock()
		defer lastMu.Unlock()
		if ids, err := st.LiveServers(ctx, time.Now()); err != nil {
			liveErrs.Inc()
		} else {
			last = float64(len(ids))
		}
		return last
	})
	if err := env.Register(p.events, p.collected, p.counted, p.users, p.rooms, p.behind, live, liveErrs); err != nil {
		return nil, err
	}
	p.core = core
	env.Metrics.Known(env.Metrics.Rejected, Stage, ReasonEpochAhead)
	return p, nil
}

// Run consumes imr.presence and collects stale entries until ctx ends.
func (p *Presence) Run(ctx context.Context) error {
	if c, ok := p.store.(store.Collector); ok && p.cfg.GCInterval > 0 {
		go p.collect(ctx, c)
	}
	if rec, ok := p.store.(store.ProgressRecorder); ok {
		go p.record(ctx, rec)
	}
	return stage.Run(ctx, p.core, p.apply)
}

// ReasonEpochAhead rejects a presence event whose epoch is further ahead of
// the clock than presence.epoch_skew.
const ReasonEpochAhead = "epoch_ahead"

// apply applies a batch of presence events; an epoch too far ahead is
// rejected (ReasonEpochAhead).
func (p *Presence) apply(ctx context.Context, b stage.Batch, decoded []stage.Decoded[*schemas.Presence]) ([]stage.Rejected, error) {
	var rejected []stage.Rejected
	now := time.Now()
	if len(b.Records) > 0 {
		p.progress.start(b.Partition, recordTime(&b.Records[0], now))
	}
	limit := now.Add(p.cfg.EpochSkew).UnixMilli()
	evs := make([]*schemas.Presence, 0, len(decoded))
	for _, d := range decoded {
		if d.Event.Epoch > limit {
			rejected = append(rejected, stage.Rejected{Msg: *d.Msg, Code: ReasonEpochAhead,
				Reason: fmt.Sprintf("epoch %d is more than presence.epoch_skew (%s) ahead of now (%d ms): an epoch is the server's start time in unix ms", d.Event.Epoch, p.cfg.EpochSkew, now.UnixMilli())})
			continue
		}
		evs = append(evs, d.Event)
	}
	if err := p.store.Apply(ctx, evs, now); err != nil {
		if ctx.Err() != nil { // revoked or stopping: another process applies it now
			p.progress.drop(b.Partition)
		}
		return nil, err
	}
	if len(b.Records) > 0 {
		p.progress.done(b.Partition, recordTime(&b.Records[len(b.Records)-1], now), time.Now())
	}
	obs.CountBy(p.events, evs, func(ev *schemas.Presence) string { return string(ev.Type) })
	return rejected, nil
}

// collect runs a collection pass at start — so the users and rooms gauges
// hold the count from the first scrape, not from presence.gc_interval
// later — and then every presence.gc_interval.
func (p *Presence) collect(ctx context.Context, c store.Collector) {
	pass := func() {
		start := time.Now()
		st, err := c.Collect(ctx, start)
		p.collected.Add(float64(st.Removed))
		if err != nil && ctx.Err() == nil {
			p.log.Warn("collecting stale presence failed", "err", err)
			return
		}
		p.users.Set(float64(st.Users))
		p.rooms.Set(float64(st.Rooms))
		p.counted.Set(float64(start.Unix()))
		if st.Removed > 0 {
			p.log.Info("collected stale presence entries", "removed", st.Removed, "users", st.Users, "rooms", st.Rooms, "took", time.Since(start))
		}
	}
	pass()
	tick.Every(ctx, p.cfg.GCInterval, pass)
}
