package main

import (
	"context"

	"github.com/imstream/imstream/internal/role"
	"github.com/imstream/imstream/pusher"
)

func runPusher(ctx context.Context, args []string) error {
	cfg, err := loadConfig("pusher", args)
	if err != nil {
		return err
	}
	env, err := role.Setup(ctx, cfg)
	if err != nil {
		return err
	}
	defer env.Close()
	p, err := pusher.New(cfg, env.PusherDeps())
	if err != nil {
		return err
	}
	return env.Run(ctx, p.Run)
}
