package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/imstream/imstream/internal/kafkax"
	"github.com/imstream/imstream/internal/obs"
	"github.com/imstream/imstream/internal/redisx"
	"github.com/imstream/imstream/store"
)

func runVersion(context.Context, []string) error {
	fmt.Println("imstream", obs.Version)
	return nil
}

func runTopics(ctx context.Context, args []string) error {
	cfg, err := loadConfig("topics", args)
	if err != nil {
		return err
	}
	k := cfg.Kafka
	conn, err := kafkax.NewConn(k)
	if err != nil {
		return err
	}
	topics := map[string]int{
		k.Topics.Presence: k.Partitions, k.Topics.Publish: k.Partitions, k.Topics.Bulk: k.Partitions, k.Topics.Groups: k.Partitions,
		k.Topics.Push: k.Partitions, k.Topics.DLQ: k.Partitions,
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
func runResetServer(ctx context.Context, args []string) error {
	fs, path := configFlags("reset-server")
	server := fs.String("server", "", "the server id to reset (as in presence events' server field)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *server == "" {
		return errors.New("--server is required")
	}
	cfg, err := loadConfigFrom(*path, fs)
	if err != nil {
		return err
	}
	rc, err := redisx.New(cfg.Redis)
	if err != nil {
		return err
	}
	defer rc.Close()
	st := store.NewRedisPresence(rc, cfg.Redis.KeyPrefix, cfg.Presence.Lease, cfg.Presence.ServerCache)
	n, err := st.ResetServer(ctx, *server)
	if err != nil {
		return err
	}
	fmt.Printf("server %s reset: lifecycle state and %d user/room entries removed; it starts afresh at its next server_up\n", *server, n)
	return nil
}
