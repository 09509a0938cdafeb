package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/pflag"

	"github.com/imstream/imstream/internal/plumbing/config"
	"github.com/imstream/imstream/internal/plumbing/kafkax"
	"github.com/imstream/imstream/internal/plumbing/redisx"
	"github.com/imstream/imstream/store"
)

func topicsFlags(*pflag.FlagSet) runFunc { return runTopics }

func runTopics(ctx context.Context, cfg config.Config) error {
	k := cfg.Kafka
	conn, err := kafkax.NewConn(k)
	if err != nil {
		return err
	}
	topics := map[string]int{}
	for _, t := range []string{k.Topics.Presence, k.Topics.Publish, k.Topics.Bulk, k.Topics.Groups, k.Topics.Push, k.Topics.DLQ} {
		topics[t] = k.PartitionsOf(t)
	}
	if err := conn.EnsureTopics(ctx, k.ReplicationFactor, topics); err != nil {
		return err
	}
	for t := range topics {
		n, err := conn.Partitions(ctx, t)
		if err != nil {
			return err
		}
		fmt.Printf("%-24s %d partitions\n", t, n)
	}
	return nil
}

// runResetServer clears a server id's presence state (docs/runbook.md,
// "A server id is poisoned").
func resetServerFlags(fs *pflag.FlagSet) runFunc {
	server := fs.String("server", "", "the server id to reset (as in presence events' server field); required")
	return func(ctx context.Context, cfg config.Config) error {
		if *server == "" {
			return usageError{errors.New("--server is required")}
		}
		return runResetServer(ctx, cfg, *server)
	}
}

func runResetServer(ctx context.Context, cfg config.Config, server string) error {
	rc, err := redisx.New(cfg.Redis)
	if err != nil {
		return err
	}
	defer rc.Close()
	st := store.NewRedisPresence(rc, cfg.Redis.KeyPrefix, cfg.Presence.Lease, cfg.Presence.ServerCache)
	n, err := st.ResetServer(ctx, server)
	if err != nil {
		return err
	}
	fmt.Printf("server %s reset: lifecycle state and %d user/room entries removed; it starts afresh at its next server_up\n", server, n)
	return nil
}
