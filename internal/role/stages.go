package role

import (
	"context"
	"fmt"

	"github.com/imstream/imstream/fanout"
	"github.com/imstream/imstream/groups"
	"github.com/imstream/imstream/ingest/gateway"
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

// Stages builds the stages of the named roles and returns their Run
// functions.
func (e *Env) Stages(roles ...string) ([]func(context.Context) error, error) {
	var runs []func(context.Context) error
	for _, r := range roles {
		switch r {
		case "presence":
			p, err := presence.New(e.Cfg, presence.Deps{Conn: e.Conn, Store: e.PresenceStore(), Metrics: e.Metrics, Registerer: e.Registry, Logger: e.Log})
			if err != nil {
				return nil, err
			}
			g, err := groups.New(e.Cfg, groups.Deps{Conn: e.Conn, Store: e.GroupStore(), Metrics: e.Metrics, Registerer: e.Registry, Logger: e.Log})
			if err != nil {
				return nil, err
			}
			if e.Admin != nil {
				e.Admin.Mux.Handle("/online", presence.OnlineHandler(e.PresenceStore()))
			}
			runs = append(runs, p.Run, g.Run)
		case "fanout":
			f, err := fanout.New(e.Cfg, fanout.Deps{Conn: e.Conn, Presence: e.PresenceStore(), Groups: e.GroupStore(), Metrics: e.Metrics, Registerer: e.Registry, Logger: e.Log})
			if err != nil {
				return nil, err
			}
			runs = append(runs, f.Run)
		case "gateway":
			gw, err := gateway.New(e.Cfg, gateway.Deps{Conn: e.Conn, Metrics: e.Metrics, Registerer: e.Registry, Logger: e.Log})
			if err != nil {
				return nil, err
			}
			e.Gateway = gw
			runs = append(runs, gw.Run)
		case "pusher":
			p, err := pusher.New(e.Cfg, e.PusherDeps())
			if err != nil {
				return nil, err
			}
			runs = append(runs, p.Run)
		default:
			return nil, fmt.Errorf("unknown role %q", r)
		}
	}
	return runs, nil
}
