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

	"github.com/prometheus/client_golang/prometheus"

	"github.com/imstream/imstream/internal/plumbing/config"
	"github.com/imstream/imstream/internal/plumbing/obs"
	"github.com/imstream/imstream/internal/plumbing/stage"
	"github.com/imstream/imstream/schemas"
	"github.com/imstream/imstream/store"
)

// Stage is the name used in metrics and dead-letter headers.
const Stage = "groups"

// Groups is the group-store stage.
type Groups struct {
	store  store.GroupStore
	core   *stage.Core
	events *prometheus.CounterVec
}

// New builds the stage from its section, the process's env and the store
// it writes; Run starts it.
func New(cfg config.Groups, env stage.Env, st store.GroupStore) (*Groups, error) {
	core, err := stage.Declare(&env, stage.Declaration{Name: Stage, Needs: []stage.Need{{Name: "Store", OK: st != nil}},
		Input: stage.Input{Group: cfg.Group, Topics: []string{env.Kafka.Topics.Groups}, Kind: schemas.KindGroup, MaxBatch: cfg.BatchSize}})
	if err != nil {
		return nil, err
	}
	g := &Groups{store: st, core: core,
		events: obs.CounterVec("imstream_group_events_total",
			"Group events applied to the group store, by type.", "type"),
	}
	if err := env.Register(g.events); err != nil {
		return nil, err
	}
	return g, nil
}

// Run consumes imr.groups until ctx ends.
func (g *Groups) Run(ctx context.Context) error {
	return stage.Run(ctx, g.core, g.apply)
}

// apply applies a batch of group events.
func (g *Groups) apply(ctx context.Context, _ stage.Batch, decoded []stage.Decoded[*schemas.Group]) ([]stage.Rejected, error) {
	evs := stage.Events(decoded)
	if err := g.store.Apply(ctx, evs); err != nil {
		return nil, err
	}
	obs.CountBy(g.events, evs, func(ev *schemas.Group) string { return string(ev.Type) })
	return nil, nil
}
