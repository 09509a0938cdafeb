package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/imstream/imstream/ingest"
	"github.com/imstream/imstream/schemas"
)

// broadcastServers and broadcastUsers are the broadcast scenario's
// presence: 1M users of app 7 over 20 servers.
const (
	broadcastServers = 20
	broadcastUsers   = 1_000_000
)

// Broadcast: one publish_broadcast to app 7 with 1M present users over 20
// servers. It reports the deliver records written (one per server, never
// one per user) and the time from the event's write to the last of them.
// The gateway's expansion of one record into a frame per user is the Go
// benchmark BenchmarkBroadcastExpansion (package gateway).
func (b *Bench) Broadcast(ctx context.Context) error {
	cfg := b.scenario(fmt.Sprintf("broadcast: one publish_broadcast to %d present users over %d servers", broadcastUsers, broadcastServers))
	if err := b.flush(ctx); err != nil {
		return err
	}
	users := make([]int64, broadcastUsers)
	for i := range users {
		users[i] = int64(i + 1)
	}
	if _, err := b.applyPresence(ctx, users, broadcastServers); err != nil {
		return err
	}
	t := cfg.Kafka.Topics
	topics := map[string]int{t.Publish: cfg.Kafka.Partitions, t.Bulk: cfg.Kafka.Partitions, t.Push: cfg.Kafka.Partitions}
	for s := 0; s < broadcastServers; s++ {
		topics[t.DeliverPrefix+"s"+strconv.Itoa(s)] = cfg.Kafka.DeliverPartitions
	}
	if err := b.conn.EnsureTopics(ctx, 1, topics); err != nil {
		return err
	}
	env, stop, err := b.start(ctx, cfg, "fanout")
	if err != nil {
		return err
	}
	defer stop()
	for !env.Metrics.Joined("fanout") {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	v, _ := json.Marshal(&schemas.Publish{Header: schemas.Header{V: 1, Type: schemas.TypePublishBroadcast, Server: "origin", AppID: app, TS: time.Now().UnixMilli()},
		Msg: schemas.Message{Cmd: schemas.CmdSystem, Notification: `{"maintenance":"02:00-02:10 UTC"}`}})
	w := b.conn.NewWriter(cfg.Kafka, t.Publish)
	defer w.Close()
	m := b.meter()
	start := time.Now()
	if err := w.WriteMessages(ctx, kafka.Message{Key: []byte(ingest.BroadcastKey(app)), Value: v}); err != nil {
		return err
	}
	written, reached := 0, 0
	deadline := start.Add(60 * time.Second)
	for time.Now().Before(deadline) {
		written, reached = 0, 0
		for s := 0; s < broadcastServers; s++ {
			if n := b.count(ctx, t.DeliverPrefix+"s"+strconv.Itoa(s)); n > 0 {
				written += n
				reached++
			}
		}
		if reached == broadcastServers {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	took := time.Since(start)
	r := b.measure(m, Result{Scenario: "broadcast to 1M present users over 20 servers", Events: 1, Lost: broadcastServers - reached})
	r.Seconds, r.PerSecond = took.Seconds(), 0
	r.Note = fmt.Sprintf("%d deliver records written for %d servers (one each, none per user); the last %s after the event was written (polled every 5 ms)",
		written, broadcastServers, took.Round(time.Millisecond))
	b.add(r)
	return nil
}
