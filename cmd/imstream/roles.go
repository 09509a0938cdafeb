package main

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/imstream/imstream/internal/plumbing/config"
	"github.com/imstream/imstream/internal/wiring/role"
)

// rolesFlags returns the flags (none besides the configuration) and run
// of a command running the named roles.
func rolesFlags(roles ...string) func(*pflag.FlagSet) runFunc {
	return func(*pflag.FlagSet) runFunc {
		return func(ctx context.Context, cfg config.Config) error { return runRoles(ctx, cfg, roles) }
	}
}

func runRoles(ctx context.Context, cfg config.Config, roles []string) error {
	{
		env, err := role.Setup(ctx, cfg)
		if err != nil {
			return err
		}
		runs, err := env.Stages(roles...)
		if err != nil {
			env.Close()
			return err
		}
		env.Log.Info("starting", "roles", roles, "brokers", cfg.Kafka.Brokers, "redis", cfg.Redis.Addrs)
		if reload, ok := ctx.Value(reloadKey{}).(func() (config.Config, error)); ok && (env.Fanout != nil || env.Gateway != nil) {
			stop := reloadOnHUP(ctx, env, reload)
			defer stop()
		}
		err = env.Run(ctx, runs...)
		if !errors.Is(err, role.ErrGraceExceeded) { // else closing could hang as well
			env.Close()
		}
		return err
	}
}

// reloadKey is the context key of the function that loads the
// configuration again, as the command did at start.
type reloadKey struct{}

// reloadOnHUP reads the configuration again on each SIGHUP and applies what
// can change without a restart: fair share's quotas and weights (the
// fanout's, and the quotas a gateway applies). Other
// changes are logged and wait for a restart. It returns a function that
// stops it.
func reloadOnHUP(ctx context.Context, env *role.Env, reload func() (config.Config, error)) func() {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-done:
				return
			case <-hup:
			}
			cfg, err := reload()
			if err != nil {
				env.Log.Error("SIGHUP: configuration not reloaded; the running one stays", "err", err)
				continue
			}
			fs := cfg.Fanout.FairShare
			if env.Fanout != nil {
				env.Fanout.SetFairShare(fs)
			}
			if env.Gateway != nil {
				env.Gateway.SetQuotas(fs)
			}
			env.Log.Info("SIGHUP: fair share reloaded", "quotas", fs.Quotas, "default_quota", fs.DefaultQuota, "weights", fs.Weights)
			if env.Fanout != nil && fs.Enabled != env.Cfg.Fanout.FairShare.Enabled {
				env.Log.Warn("SIGHUP: fanout.fair_share.enabled changes only with a restart")
			}
			if env.Gateway != nil && cfg.Gateway.Quotas != env.Cfg.Gateway.Quotas {
				env.Log.Warn("SIGHUP: gateway.quotas changes only with a restart (the quotas it applies are fanout.fair_share's, reloaded)")
			}
		}
	}()
	return func() {
		signal.Stop(hup)
		close(done)
	}
}
