package kafkax

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/imstream/imstream/internal/plumbing/config"
	"github.com/imstream/imstream/schemas"
)

// StageConsumer returns the consume-loop settings of a stage: the shared
// consumer section plus the stage's group, topics and batch limits.
func StageConsumer(c config.Consumer, group string, topics []string, maxBatch int, maxWait time.Duration, log *slog.Logger, hooks Hooks) ConsumerConfig {
	return ConsumerConfig{
		Group: group, Topics: topics, MaxBatch: maxBatch, MaxWait: maxWait,
		QueueSize: c.QueueSize, MaxFetchBytes: c.MaxFetchBytes, CommitInterval: c.CommitInterval,
		RetryMin: c.RetryMin, RetryMax: c.RetryMax,
		SessionTimeout: c.SessionTimeout, HeartbeatInterval: c.HeartbeatInterval, RebalanceTimeout: c.RebalanceTimeout,
		Logger: log, Hooks: hooks,
	}
}

// NewDeadLetter returns the dead-letter writer of a stage.
func (c *Conn) NewDeadLetter(k config.Kafka, stage string, onReject func(reason string)) *DeadLetter {
	d := &DeadLetter{W: c.NewWriter(k, k.Topics.DLQ), Stage: stage, OnReject: onReject}
	if k.MaxRecordBytes > 0 { // a letter over kafka.max_record_bytes is written truncated (Send)
		d.W.BatchBytes = int64(k.MaxRecordBytes)
	}
	if k.AutoCreateTopics {
		d.Ensure = func(ctx context.Context) error {
			return c.EnsureTopics(ctx, k.ReplicationFactor, map[string]int{k.Topics.DLQ: k.Partitions})
		}
	}
	return d
}

// Reject classifies a decode error of m for the dead-letter topic.
func Reject(m kafka.Message, err error) Rejected {
	var se *schemas.Error
	if errors.As(err, &se) {
		return Rejected{Msg: m, Code: se.Reason, Reason: se.Error()}
	}
	return Rejected{Msg: m, Code: "invalid", Reason: err.Error()}
}

// Decoded is a record that passed validation, with its event.
type Decoded[T schemas.Event] struct {
	Event T
	Msg   *kafka.Message
}

// Decoder holds what DecodeBatch checks besides the schema.
type Decoder struct {
	MaxBytes int // larger records are rejected as oversize
	// OwnMaxBytes, when larger than MaxBytes, is the limit for records
	// imstream wrote itself: a record carrying header HeaderMaxBytes is
	// checked against that header's value, capped at OwnMaxBytes.
	OwnMaxBytes int
	// AcceptKeyMismatch keeps records whose key is not the one their body
	// calls for (schemas.AppendKey) instead of rejecting them with reason
	// key_mismatch; either way OnKeyMismatch is called.
	AcceptKeyMismatch bool
	OnKeyMismatch     func(accepted bool)
}

// HeaderMaxBytes is the header imstream puts on the records it writes for
// its own stages (push jobs): the size limit they were written under
// (kafka.max_record_bytes), which the reader checks them against instead
// of schemas.max_bytes, the limit for third-party input.
const HeaderMaxBytes = "max_bytes"

// limit is the size limit m is checked against.
func (d Decoder) limit(m *kafka.Message) int {
	if d.OwnMaxBytes <= d.MaxBytes || len(m.Value) <= d.MaxBytes {
		return d.MaxBytes
	}
	for _, h := range m.Headers {
		if h.Key == HeaderMaxBytes {
			if v, err := strconv.Atoi(string(h.Value)); err == nil {
				return max(d.MaxBytes, min(v, d.OwnMaxBytes))
			}
		}
	}
	return d.MaxBytes
}

// Yield lets other goroutines run every 64th time it is called with a
// growing i: loops over a batch call it once per record. Go's scheduler
// lets a goroutine run up to 10 ms before preempting it, and a goroutine
// woken by the network — an online event that just arrived — waits behind
// every runnable one; during a bulk burst that wait, at every hop, was most
// of the online lane's latency. A yield costs about 100 ns.
func Yield(i int) {
	if i&63 == 63 {
		runtime.Gosched()
	}
}

// DecodeBatch validates every record as an event of kind, and its key
// against the event: the valid ones come back in order with their records,
// the others as Rejected for the dead-letter topic.
func DecodeBatch[T schemas.Event](records []kafka.Message, d Decoder, kind schemas.Kind) ([]Decoded[T], []Rejected) {
	out := make([]Decoded[T], 0, len(records))
	var rejected []Rejected
	var key []byte
	for i := range records {
		Yield(i)
		m := &records[i]
		ev, err := schemas.DecodeKind(m.Value, d.limit(m), kind)
		if err != nil {
			rejected = append(rejected, Reject(*m, err))
			continue
		}
		var ok bool
		if key, ok = schemas.AppendKey(key[:0], ev); ok && string(key) != string(m.Key) {
			if d.OnKeyMismatch != nil {
				d.OnKeyMismatch(d.AcceptKeyMismatch)
			}
			if !d.AcceptKeyMismatch {
				rejected = append(rejected, Rejected{Msg: *m, Code: schemas.ReasonKeyMismatch,
					Reason: fmt.Sprintf("key %q, but the event calls for %q", m.Key, key)})
				continue
			}
		}
		out = append(out, Decoded[T]{Event: ev.(T), Msg: m})
	}
	return out, rejected
}

// PrepareTopics creates topics (with k.Partitions partitions) and the
// dead-letter topic when kafka.auto_create_topics is set. A Kafka that is
// not up yet is waited for, with capped exponential back-off and a WARN
// line naming the brokers tried, until ctx ends: roles start in any order.
// Only an error the brokers will answer again the same way (an invalid
// replication factor, a denied request) is returned.
func (c *Conn) PrepareTopics(ctx context.Context, k config.Kafka, topics ...string) error {
	if !k.AutoCreateTopics {
		return nil
	}
	want := map[string]int{k.Topics.DLQ: k.Partitions}
	for _, t := range topics {
		want[t] = k.Partitions
	}
	return Retry(ctx, "create topics", c.Brokers, func() error { return c.EnsureTopics(ctx, k.ReplicationFactor, want) })
}

// Retry runs f until it succeeds, ctx ends (nil is returned then), or it
// fails with an error the brokers would give again (a Kafka error that is
// not temporary). Between attempts it waits 200 ms, doubling up to 10 s,
// and logs each failure with what it was doing and the brokers it tried.
func Retry(ctx context.Context, what string, brokers []string, f func() error) error {
	wait := 200 * time.Millisecond
	for {
		err := f()
		if err == nil || ctx.Err() != nil {
			return nil
		}
		var ke kafka.Error
		if errors.As(err, &ke) && !ke.Temporary() && !errors.Is(err, kafka.BrokerNotAvailable) {
			return fmt.Errorf("%s: %w", what, err)
		}
		slog.Warn("waiting for Kafka", "doing", what, "brokers", brokers, "retry_in", wait, "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		wait = min(2*wait, 10*time.Second)
	}
}
