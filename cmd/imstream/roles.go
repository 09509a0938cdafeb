package main

import (
	"context"
	"errors"

	"github.com/imstream/imstream/internal/role"
)

// runRoles returns a command running the named consumer roles.
func runRoles(name string, roles ...string) func(ctx context.Context, args []string) error {
	return func(ctx context.Context, args []string) error {
		cfg, err := loadConfig(name, args)
		if err != nil {
			return err
		}
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
