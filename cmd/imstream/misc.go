package main

import (
	"context"
	"fmt"

	"github.com/imstream/imstream/internal/kafkax"
	"github.com/imstream/imstream/internal/obs"
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
		k.Topics.Presence: k.Partitions, k.Topics.Publish: k.Partitions, k.Topics.Groups: k.Partitions,
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
