package main

import (
	"context"
	"errors"

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
		err = env.Run(ctx, runs...)
		if !errors.Is(err, role.ErrGraceExceeded) { // else closing could hang as well
			env.Close()
		}
		return err
	}
}
