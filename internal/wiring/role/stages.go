package role

import (
	"context"
	"fmt"
	"time"

	"github.com/imstream/imstream/fanout"
	"github.com/imstream/imstream/gateway"
	"github.com/imstream/imstream/groups"
	"github.com/imstream/imstream/internal/plumbing/obs"
	"github.com/imstream/imstream/presence"
	"github.com/imstream/imstream/pusher"
	"github.com/imstream/imstream/store"
)

// Roles lists the consumer roles in the order `all` starts them. The
// presence role also runs the group-store stage and serves /online.
var Roles = []string{"presence", "fanout", "pusher"}

// PresenceStore returns the process's presence store (built once).
func (e *Env) PresenceStore() store.PresenceStore {
	if e.presence == nil {
		p := e.Cfg.Presence
		e.presence = store.NewRedisPresence(e.Redis, e.Cfg.Redis.KeyPrefix, p.Lease, p.ServerCache)
	}
	return e.presence
}

// GroupStore returns the process's group store (built once).
func (e *Env) GroupStore() store.GroupStore {
	if e.groups == nil {
		e.groups = store.NewRedisGroups(e.Redis, e.Cfg.Redis.KeyPrefix, e.Cfg.Groups.Cache)
	}
	return e.groups
}

// observe returns the Redis-call observer of stage.
// Its families are exported at 0 for ops, the calls the stage makes.
func (e *Env) observe(stage string, ops ...string) store.Observer {
	e.Metrics.KnownRedis(stage, ops...)
	return func(op string, d time.Duration, err error) { e.Metrics.ObserveRedis(stage, op, d, err) }
}

// ready adds a readiness check: stage's consumer has joined its group.
func (e *Env) ready(stage string) {
	e.Ready.Add("group "+stage, func(context.Context) error {
		if !e.Metrics.Joined(stage) {
			return fmt.Errorf("%s has not joined its consumer group yet", stage)
		}
		return nil
	})
}

// Stages builds the stages of the named roles and returns their Run
// functions.
func (e *Env) Stages(roles ...string) ([]func(context.Context) error, error) {
	var runs []func(context.Context) error
	k := e.Cfg.Kafka.Topics
	lag := []obs.GroupTopic{
		{Group: e.Cfg.Presence.Group, Topic: k.Presence}, {Group: e.Cfg.Groups.Group, Topic: k.Groups},
		{Group: e.Cfg.Fanout.Group, Topic: k.Publish}, {Group: e.Cfg.Pusher.Group, Topic: k.Push},
	}
	if !k.OneLane() {
		lag = append(lag, obs.GroupTopic{Group: e.Cfg.Fanout.Group, Topic: k.Bulk})
	}
	lc := obs.NewLagCollector(e.Conn, lag)
	lc.Log = e.Log
	lc.More = func() []obs.GroupTopic { // the deliver topics of the IM servers connected to this gateway
		if e.Gateway == nil {
			return nil
		}
		var out []obs.GroupTopic
		for _, gt := range e.Gateway.DeliverGroups() {
			out = append(out, obs.GroupTopic{Group: gt[0], Topic: gt[1]})
		}
		return out
	}
	if err := e.Registry.Register(lc); err != nil {
		return nil, err
	}
	for _, r := range roles {
		switch r {
		case "presence":
			p, err := presence.New(e.Cfg.Presence, e.StageEnv(), store.ObservePresence(e.PresenceStore(), e.observe(presence.Stage, "apply", "collect")))
			if err != nil {
				return nil, err
			}
			g, err := groups.New(e.Cfg.Groups, e.StageEnv(), store.ObserveGroups(e.GroupStore(), e.observe(groups.Stage, "group_apply")))
			if err != nil {
				return nil, err
			}
			if e.Admin != nil {
				e.Admin.Mux.Handle("/online", presence.OnlineHandler(e.PresenceStore()))
			}
			e.ready(presence.Stage)
			e.ready(groups.Stage)
			runs = append(runs, p.Run, g.Run)
		case "fanout":
			var spill store.SpillStore = store.NewRedisSpill(e.Redis, e.Cfg.Redis.KeyPrefix)
			if e.Cfg.Fanout.FairShare.Enabled { // fair share's calls: observed only where they are made
				spill = store.ObserveSpill(spill, e.observe(fanout.Stage, "spill_hold", "spill_drain", "spill_marks", "quota_take"))
			}
			f, err := fanout.New(e.Cfg.Fanout, e.StageEnv(),
				store.ObservePresence(e.PresenceStore(), e.observe(fanout.Stage, "users", "room", "live_servers")),
				store.ObserveGroups(e.GroupStore(), e.observe(fanout.Stage, "group")), spill)
			if err != nil {
				return nil, err
			}
			e.Fanout = f
			e.ready(fanout.Stage)
			runs = append(runs, f.Run)
		case "gateway":
			gw, err := gateway.New(e.Cfg.Gateway, e.Cfg.Fanout.FairShare, e.StageEnv())
			if err != nil {
				return nil, err
			}
			e.Gateway = gw
			runs = append(runs, gw.Run)
		case "pusher":
			p, err := pusher.New(e.Cfg.Pusher, e.StageEnv(), pusher.NewRedisSink(e.Redis, e.Cfg.Redis),
				store.ObservePresence(e.PresenceStore(), e.observe(pusher.Stage, "users")),
				store.ObserveGroups(e.GroupStore(), e.observe(pusher.Stage, "group")), e.Redis)
			if err != nil {
				return nil, err
			}
			e.ready(pusher.Stage)
			runs = append(runs, p.Run)
		default:
			return nil, fmt.Errorf("unknown role %q", r)
		}
	}
	return runs, nil
}
