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
//	imstream_presence_live_servers         IM servers whose lease runs (at scrape time; -1 when Redis fails)
package presence

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/imstream/imstream/internal/config"
	"github.com/imstream/imstream/internal/kafkax"
	"github.com/imstream/imstream/internal/obs"
	"github.com/imstream/imstream/internal/stage"
	"github.com/imstream/imstream/schemas"
	"github.com/imstream/imstream/store"
)

// Stage is the name used in metrics and dead-letter headers.
const Stage = "presence"

// Deps are the presence stage's collaborators.
type Deps struct {
	Conn       *kafkax.Conn
	Store      store.PresenceStore
	Metrics    *obs.Metrics
	Registerer prometheus.Registerer
	Logger     *slog.Logger
}

// Presence is the presence stage.
type Presence struct {
	cfg       config.Config
	deps      Deps
	log       *slog.Logger
	core      *stage.Core
	events    *prometheus.CounterVec
	collected prometheus.Counter
	users     prometheus.Gauge
	rooms     prometheus.Gauge
}

// New builds the stage; Run starts it.
func New(cfg config.Config, deps Deps) (*Presence, error) {
	if deps.Conn == nil || deps.Store == nil || deps.Metrics == nil || deps.Registerer == nil {
		return nil, errors.New("presence: Conn, Store, Metrics and Registerer are required")
	}
	if deps.Logger == nil {
		deps.Logger = slog.Default()
	}
	p := &Presence{
		cfg: cfg, deps: deps, log: deps.Logger.With("stage", Stage),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imstream_presence_events_total", Help: "Presence events applied to the store, by type.",
		}, []string{"type"}),
		collected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "imstream_presence_collected_total", Help: "Stale presence entries removed by the collector.",
		}),
		users: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "imstream_presence_users", Help: "Users with a presence entry, as of the last collection pass.",
		}),
		rooms: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "imstream_presence_rooms", Help: "Rooms with a presence entry, as of the last collection pass.",
		}),
	}
	live := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "imstream_presence_live_servers", Help: "IM servers whose lease runs now (read at scrape time).",
	}, func() float64 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		ids, err := deps.Store.LiveServers(ctx, time.Now())
		if err != nil {
			return -1
		}
		return float64(len(ids))
	})
	for _, c := range []prometheus.Collector{p.events, p.collected, p.users, p.rooms, live} {
		if err := deps.Registerer.Register(c); err != nil {
			return nil, err
		}
	}
	p.core = stage.NewCore(stage.Env{Conn: deps.Conn, Config: cfg, Metrics: deps.Metrics, Logger: deps.Logger}, Stage)
	deps.Metrics.Known(deps.Metrics.Rejected, Stage, ReasonEpochAhead)
	deps.Metrics.Known(deps.Metrics.Consumed, Stage, cfg.Kafka.Topics.Presence)
	return p, nil
}

// Run consumes imr.presence and collects stale entries until ctx ends.
func (p *Presence) Run(ctx context.Context) error {
	defer p.core.Close()
	if c, ok := p.deps.Store.(store.Collector); ok && p.cfg.Presence.GCInterval > 0 {
		go p.collect(ctx, c)
	}
	return stage.Consume(ctx, p.core, stage.Input{Group: p.cfg.Presence.Group, Topics: []string{p.cfg.Kafka.Topics.Presence}, Prepare: true,
		Kind: schemas.KindPresence, MaxBatch: p.cfg.Presence.BatchSize, MaxWait: 100 * time.Millisecond}, p.apply)
}

// ReasonEpochAhead rejects a presence event whose epoch is further ahead of
// the clock than presence.epoch_skew.
const ReasonEpochAhead = "epoch_ahead"

// apply applies a batch of presence events; an epoch too far ahead is
// rejected (ReasonEpochAhead).
func (p *Presence) apply(ctx context.Context, _ kafkax.Batch, decoded []kafkax.Decoded[*schemas.Presence]) ([]kafkax.Rejected, error) {
	var rejected []kafkax.Rejected
	now := time.Now()
	limit := now.Add(p.cfg.Presence.EpochSkew).UnixMilli()
	evs := make([]*schemas.Presence, 0, len(decoded))
	for _, d := range decoded {
		if d.Event.Epoch > limit {
			rejected = append(rejected, kafkax.Rejected{Msg: *d.Msg, Code: ReasonEpochAhead,
				Reason: fmt.Sprintf("epoch %d is more than presence.epoch_skew (%s) ahead of now (%d ms): an epoch is the server's start time in unix ms", d.Event.Epoch, p.cfg.Presence.EpochSkew, now.UnixMilli())})
			continue
		}
		evs = append(evs, d.Event)
	}
	if err := p.deps.Store.Apply(ctx, evs, now); err != nil {
		return nil, err
	}
	obs.CountBy(p.events, evs, func(ev *schemas.Presence) string { return string(ev.Type) })
	return rejected, nil
}

func (p *Presence) collect(ctx context.Context, c store.Collector) {
	t := time.NewTicker(p.cfg.Presence.GCInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		start := time.Now()
		st, err := c.Collect(ctx, start)
		p.collected.Add(float64(st.Removed))
		if err != nil && ctx.Err() == nil {
			p.log.Warn("collecting stale presence failed", "err", err)
			continue
		}
		p.users.Set(float64(st.Users))
		p.rooms.Set(float64(st.Rooms))
		if st.Removed > 0 {
			p.log.Info("collected stale presence entries", "removed", st.Removed, "users", st.Users, "rooms", st.Rooms, "took", time.Since(start))
		}
	}
}
