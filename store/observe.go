package store

import (
	"context"
	"time"

	"github.com/imstream/imstream/schemas"
)

// Observer is told about every store call: its op, duration and error.
type Observer func(op string, d time.Duration, err error)

// ObservePresence returns s with every call reported to obs (metrics at
// the boundary; s is unchanged). Optional abilities (Collector) are kept.
func ObservePresence(s PresenceStore, obs Observer) PresenceStore {
	o := &observedPresence{s: s, obs: obs}
	if c, ok := s.(Collector); ok {
		return &observedCollector{observedPresence: o, c: c}
	}
	return o
}

type observedPresence struct {
	s   PresenceStore
	obs Observer
}

func (o *observedPresence) Apply(ctx context.Context, evs []*schemas.Presence, now time.Time) error {
	start := time.Now()
	err := o.s.Apply(ctx, evs, now)
	o.obs("apply", time.Since(start), err)
	return err
}

func (o *observedPresence) Users(ctx context.Context, appid int64, uids []int64, now time.Time) ([]UserPresence, error) {
	start := time.Now()
	r, err := o.s.Users(ctx, appid, uids, now)
	o.obs("users", time.Since(start), err)
	return r, err
}

func (o *observedPresence) AppServers(ctx context.Context, appid int64, now time.Time) ([]string, error) {
	start := time.Now()
	r, err := o.s.AppServers(ctx, appid, now)
	o.obs("app_servers", time.Since(start), err)
	return r, err
}

func (o *observedPresence) Room(ctx context.Context, appid, room int64, now time.Time) ([]string, error) {
	start := time.Now()
	r, err := o.s.Room(ctx, appid, room, now)
	o.obs("room", time.Since(start), err)
	return r, err
}

func (o *observedPresence) LiveServers(ctx context.Context, now time.Time) ([]string, error) {
	start := time.Now()
	r, err := o.s.LiveServers(ctx, now)
	o.obs("live_servers", time.Since(start), err)
	return r, err
}

// JudgedAt forwards to the store unobserved: it reads a cache the
// store refreshes at most every second (that read is a "users", "room" or
// "app_servers" call's first step).
func (o *observedPresence) JudgedAt(ctx context.Context, now time.Time) (time.Time, error) {
	return o.s.JudgedAt(ctx, now)
}

// Progress forwards to the store when it is a ProgressRecorder.
func (o *observedPresence) Progress(ctx context.Context, process string, through, now time.Time) error {
	p, ok := o.s.(ProgressRecorder)
	if !ok {
		return nil
	}
	start := time.Now()
	err := p.Progress(ctx, process, through, now)
	o.obs("progress", time.Since(start), err)
	return err
}

type observedCollector struct {
	*observedPresence
	c Collector
}

func (o *observedCollector) Collect(ctx context.Context, now time.Time) (CollectStats, error) {
	start := time.Now()
	st, err := o.c.Collect(ctx, now)
	o.obs("collect", time.Since(start), err)
	return st, err
}

// ObserveGroups returns s with every call reported to obs.
func ObserveGroups(s GroupStore, obs Observer) GroupStore { return &observedGroups{s: s, obs: obs} }

type observedGroups struct {
	s   GroupStore
	obs Observer
}

func (o *observedGroups) Apply(ctx context.Context, evs []*schemas.Group) error {
	start := time.Now()
	err := o.s.Apply(ctx, evs)
	o.obs("group_apply", time.Since(start), err)
	return err
}

func (o *observedGroups) Group(ctx context.Context, appid, gid int64) (*Group, error) {
	start := time.Now()
	g, err := o.s.Group(ctx, appid, gid)
	o.obs("group", time.Since(start), err)
	return g, err
}

// ObserveSpill returns s with every call reported to obs: ops spill_hold,
// spill_drain, spill_marks and quota_take.
func ObserveSpill(s SpillStore, obs Observer) SpillStore { return &observedSpill{s: s, obs: obs} }

type observedSpill struct {
	s   SpillStore
	obs Observer
}

func (o *observedSpill) Hold(ctx context.Context, held map[string]int64) error {
	start := time.Now()
	err := o.s.Hold(ctx, held)
	o.obs("spill_hold", time.Since(start), err)
	return err
}

func (o *observedSpill) Drain(ctx context.Context, drained map[string]int64) error {
	start := time.Now()
	err := o.s.Drain(ctx, drained)
	o.obs("spill_drain", time.Since(start), err)
	return err
}

func (o *observedSpill) Marks(ctx context.Context, streams []string) (held, drained []int64, err error) {
	start := time.Now()
	held, drained, err = o.s.Marks(ctx, streams)
	o.obs("spill_marks", time.Since(start), err)
	return held, drained, err
}

func (o *observedSpill) Take(ctx context.Context, reqs []QuotaTake) ([]QuotaGrant, error) {
	start := time.Now()
	g, err := o.s.Take(ctx, reqs)
	o.obs("quota_take", time.Since(start), err)
	return g, err
}
