package main

import (
	"context"

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
		defer env.Close()
		runs, err := env.Stages(roles...)
		if err != nil {
			return err
		}
		env.Log.Info("starting", "roles", roles, "brokers", cfg.Kafka.Brokers, "redis", cfg.Redis.Addrs)
		return env.Run(ctx, runs...)
	}
}
