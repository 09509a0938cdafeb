// Package groups is the group-store stage: it consumes imr.groups (events
// from the app backend) and keeps the group store current. The fanout reads
// the store through store.GroupStore. It runs inside the presence role.
//
// Metrics (besides the shared ones, stage="groups"):
//
//	imstream_group_events_total{type}   events applied, by type
package groups

import (
	"context"
	"errors"
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
const Stage = "groups"

// Deps are the stage's collaborators.
type Deps struct {
	Conn       *kafkax.Conn
	Store      store.GroupStore
	Metrics    *obs.Metrics
	Registerer prometheus.Registerer
	Logger     *slog.Logger
}

// Groups is the group-store stage.
type Groups struct {
	cfg    config.Config
	deps   Deps
	core   *stage.Core
	events *prometheus.CounterVec
}

// New builds the stage; Run starts it.
func New(cfg config.Config, deps Deps) (*Groups, error) {
	if deps.Conn == nil || deps.Store == nil || deps.Metrics == nil || deps.Registerer == nil {
		return nil, errors.New("groups: Conn, Store, Metrics and Registerer are required")
	}
	if deps.Logger == nil {
		deps.Logger = slog.Default()
	}
	g := &Groups{cfg: cfg, deps: deps,
		core: stage.NewCore(stage.Env{Conn: deps.Conn, Config: cfg, Metrics: deps.Metrics, Logger: deps.Logger}, Stage),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imstream_group_events_total", Help: "Group events applied to the group store, by type.",
		}, []string{"type"}),
	}
	if err := deps.Registerer.Register(g.events); err != nil {
		return nil, err
	}
	deps.Metrics.Known(deps.Metrics.Consumed, Stage, cfg.Kafka.Topics.Groups)
	return g, nil
}

// Run consumes imr.groups until ctx ends.
func (g *Groups) Run(ctx context.Context) error {
	defer g.core.Close()
	return stage.Consume(ctx, g.core, stage.Input{Group: g.cfg.Groups.Group, Topics: []string{g.cfg.Kafka.Topics.Groups}, Prepare: true,
		Kind: schemas.KindGroup, MaxBatch: g.cfg.Groups.BatchSize, MaxWait: 100 * time.Millisecond}, g.apply)
}

// apply applies a batch of group events.
func (g *Groups) apply(ctx context.Context, _ kafkax.Batch, decoded []kafkax.Decoded[*schemas.Group]) ([]kafkax.Rejected, error) {
	evs := stage.Events(decoded)
	if err := g.deps.Store.Apply(ctx, evs); err != nil {
		return nil, err
	}
	obs.CountBy(g.events, evs, func(ev *schemas.Group) string { return string(ev.Type) })
	return nil, nil
}
