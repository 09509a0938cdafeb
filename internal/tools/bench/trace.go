package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/imstream/imstream/internal/tools/trace"
	"github.com/imstream/imstream/schemas"
)

// traceOthers is how many other records the trace scenario's topic holds.
const traceOthers = 1_000_000

// Trace: `imstream trace` for one event among 1M others written in the
// same window to the same topic: the time to the answer (input found, its
// dead letters, spill, deliver and push partitions read).
func (b *Bench) Trace(ctx context.Context) error {
	cfg := b.scenario(fmt.Sprintf("trace: one event among %d others in the window", traceOthers))
	t := cfg.Kafka.Topics
	if err := b.conn.EnsureTopics(ctx, 1, map[string]int{t.Publish: cfg.Kafka.Partitions, t.Bulk: cfg.Kafka.Partitions,
		t.Push: cfg.Kafka.Partitions, t.DLQ: cfg.Kafka.Partitions}); err != nil {
		return err
	}
	since := time.Now().Add(-time.Minute)
	const target = 123_456
	if err := b.produce(ctx, t.Publish, traceOthers+1, func(i int) kafka.Message {
		if i == traceOthers/2 {
			m := publishRecord(schemas.TypePublish, 42, schemas.Message{Cmd: schemas.CmdIM, Content: "the one"})
			m.Value = append(m.Value[:len(m.Value)-1], fmt.Sprintf(`,"msgid":%d}`, target)...)
			return m
		}
		return publishRecord(schemas.TypePublish, int64(1000+i%50_000), schemas.Message{Cmd: schemas.CmdIM, Content: "other"})
	}); err != nil {
		return err
	}
	tr := &trace.Tracer{Conn: b.conn, Kafka: cfg.Kafka, Pusher: cfg.Pusher, Redis: b.rc, Prefix: cfg.Redis.KeyPrefix, Lease: cfg.Presence.Lease}
	m := b.meter()
	start := time.Now()
	res, err := tr.Trace(ctx, trace.Query{AppID: app, MsgID: target, UID: 42, Since: since})
	took := time.Since(start)
	if err != nil {
		return err
	}
	r := b.measure(m, Result{Scenario: "trace one event among 1M others", Events: 1})
	r.Seconds, r.PerSecond = took.Seconds(), 0
	if !res.Found {
		r.Lost = 1
	}
	r.Note = fmt.Sprintf("answered in %s: found %v with %d hops, reading 1 of %d partitions from the window's start (%d records per partition)",
		took.Round(time.Millisecond), res.Found, len(res.Hops), cfg.Kafka.Partitions, traceOthers/cfg.Kafka.Partitions)
	b.add(r)
	return nil
}
