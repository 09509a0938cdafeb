// Package role holds what every role process sets up the same way: logger,
// metrics registry, admin HTTP server, Kafka and Redis clients, readiness
// checks, and running until a signal.
package role

import (
	"context"
	"errors"
	"log/slog"
	"net/http/pprof"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/imstream/imstream/fanout"
	"github.com/imstream/imstream/gateway"
	"github.com/imstream/imstream/internal/plumbing/config"
	"github.com/imstream/imstream/internal/plumbing/kafkax"
	"github.com/imstream/imstream/internal/plumbing/obs"
	"github.com/imstream/imstream/internal/plumbing/redisx"
	"github.com/imstream/imstream/internal/plumbing/stage"
	"github.com/imstream/imstream/internal/tools/trace"
	"github.com/imstream/imstream/store"
)

// Env is a role process's shared set-up.
type Env struct {
	Cfg      config.Config
	Log      *slog.Logger
	Registry *obs.Registry
	Metrics  *obs.Metrics
	Ready    *obs.Readiness
	Conn     *kafkax.Conn
	Redis    redis.UniversalClient
	Admin    *obs.Server      // nil when admin.listen is ""
	Gateway  *gateway.Gateway // set when the gateway role was built
	Fanout   *fanout.Fanout   // set when the fanout role was built

	presence store.PresenceStore
	groups   store.GroupStore
}

// refusedWarning is how long /readyz warns after an output was refused.
const refusedWarning = time.Hour

// Setup builds the environment and binds the admin port.
func Setup(ctx context.Context, cfg config.Config) (*Env, error) {
	conn, err := kafkax.NewConn(cfg.Kafka)
	if err != nil {
		return nil, err
	}
	rc, err := redisx.New(cfg.Redis)
	if err != nil {
		return nil, err
	}
	reg := obs.NewRegistry()
	e := &Env{
		Cfg: cfg, Log: obs.NewLogger(cfg.Log), Registry: reg, Metrics: obs.NewMetrics(reg),
		Ready: &obs.Readiness{}, Conn: conn, Redis: rc,
	}
	slog.SetDefault(e.Log)
	redisx.UseSlog()
	e.Ready.AddProbe("redis "+strings.Join(cfg.Redis.Addrs, ","), 2*time.Second, cfg.Admin.RedisDownAfter,
		func(ctx context.Context) error { return e.Redis.Ping(ctx).Err() })
	e.Ready.AddProbe("kafka "+strings.Join(cfg.Kafka.Brokers, ","), 2*time.Second, cfg.Admin.KafkaDownAfter, e.Conn.Probe)
	e.Ready.Add("partitions", func(context.Context) error { return e.Metrics.Stalls.Check(time.Now(), cfg.Admin.StuckAfter) })
	e.Ready.Warn("outputs", func() string { return e.Metrics.RefusedSince(time.Now().Add(-refusedWarning)) })
	if cfg.Admin.Listen != "" {
		srv, err := obs.Listen(cfg.Admin.Listen, reg, e.Ready)
		if err != nil {
			_ = e.Redis.Close()
			return nil, err
		}
		srv.Mux.Handle("/trace", trace.Handler(&trace.Tracer{Conn: conn, Kafka: cfg.Kafka, Pusher: cfg.Pusher, Redis: rc, Prefix: cfg.Redis.KeyPrefix, Lease: cfg.Presence.Lease}))
		if cfg.Admin.Pprof {
			srv.Mux.HandleFunc("/debug/pprof/", pprof.Index)
			srv.Mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
			srv.Mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
			srv.Mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		}
		e.Admin = srv
	}
	return e, nil
}

// StageEnv is the env every stage of this process shares.
func (e *Env) StageEnv() stage.Env {
	return stage.NewEnv(e.Cfg, e.Conn, e.Metrics, e.Registry, e.Log)
}

// Run serves the admin port and runs every fn until ctx ends or one fails.
func (e *Env) Run(ctx context.Context, fns ...func(context.Context) error) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { e.Ready.RunProbes(gctx); return nil })
	if e.Admin != nil {
		e.Log.Info("admin listening", "addr", e.Admin.Addr(), "paths", "/metrics /healthz /readyz")
		g.Go(func() error { return e.Admin.Serve(gctx) })
	}
	for _, fn := range fns {
		g.Go(func() error {
			err := fn(gctx)
			if err == nil && gctx.Err() == nil {
				err = errors.New("role stopped unexpectedly")
			}
			return err
		})
	}
	done := make(chan error, 1)
	go func() { done <- g.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		e.Log.Info("stopping", "grace", e.Cfg.Shutdown.Grace)
		select {
		case err = <-done:
		case <-time.After(e.Cfg.Shutdown.Grace):
			attrs := []any{"grace", e.Cfg.Shutdown.Grace}
			if e.Gateway != nil {
				attrs = append(attrs, "gateway_events_not_produced", e.Gateway.Queued())
			}
			e.Log.Error("shutdown.grace ran out; exiting without waiting further (uncommitted records are replayed by the next owner)", attrs...)
			return ErrGraceExceeded
		}
	}
	if ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// ErrGraceExceeded is returned by Run when the roles did not stop within
// shutdown.grace; the caller exits without further clean-up.
var ErrGraceExceeded = errors.New("shutdown.grace exceeded")

// Close releases the clients.
func (e *Env) Close() { _ = e.Redis.Close() }
