package stage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/imstream/imstream/internal/plumbing/config"
	"github.com/imstream/imstream/internal/plumbing/kafkax"
	"github.com/imstream/imstream/internal/plumbing/obs"
	"github.com/imstream/imstream/schemas"
)

// Decoded is a record that passed validation, with its event.
type Decoded[T schemas.Event] struct {
	Event T
	Msg   *kafka.Message
}

// Rejected is a record for the dead-letter topic, with its reason.
type Rejected = kafkax.Rejected

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

// Format is the value of m's schemas.HeaderFormat header, "" (JSON)
// when it has none.
func Format(m *kafka.Message) string {
	for _, h := range m.Headers {
		if h.Key == schemas.HeaderFormat {
			return string(h.Value)
		}
	}
	return ""
}

// Reject classifies a decode error of m for the dead-letter topic.
func Reject(m kafka.Message, err error) Rejected {
	var se *schemas.Error
	if errors.As(err, &se) {
		return Rejected{Msg: m, Code: se.Reason, Reason: se.Error()}
	}
	return Rejected{Msg: m, Code: "invalid", Reason: err.Error()}
}

// DecodeBatch validates every record as an event of kind, and its key
// against the event: the valid ones come back in order with their records,
// the others as Rejected for the dead-letter topic.
func DecodeBatch[T schemas.Event](records []kafka.Message, d Decoder, kind schemas.Kind) ([]Decoded[T], []Rejected) {
	return DecodeSome[T](records, d, kind, nil)
}

// DecodeSome is DecodeBatch for the records whose skip entry is false
// (skip nil: every record); the others are left alone, neither decoded
// nor rejected.
func DecodeSome[T schemas.Event](records []kafka.Message, d Decoder, kind schemas.Kind, skip []bool) ([]Decoded[T], []Rejected) {
	out := make([]Decoded[T], 0, len(records))
	var rejected []Rejected
	var key []byte
	for i := range records {
		if skip != nil && skip[i] {
			continue
		}
		kafkax.Yield(i)
		m := &records[i]
		ev, err := schemas.DecodeKindFormat(m.Value, d.limit(m), kind, Format(m))
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

// newDecoder returns stage's record checks, counting keys that do not
// match their events in imstream_key_mismatch_total.
func newDecoder(m *obs.Metrics, stage string, s config.Schemas, ownMax int) Decoder {
	rejected := m.KeyMismatch.WithLabelValues(stage, "rejected") // both exported at 0 from the start
	accepted := m.KeyMismatch.WithLabelValues(stage, "accepted")
	return Decoder{MaxBytes: s.MaxBytes, OwnMaxBytes: ownMax, AcceptKeyMismatch: s.KeyMismatch == "accept", OnKeyMismatch: func(ok bool) {
		if ok {
			accepted.Inc()
		} else {
			rejected.Inc()
		}
	}}
}

// newDeadLetter returns the dead-letter writer of stage, counting
// rejections and truncations; a letter over kafka.max_record_bytes is
// written truncated.
func newDeadLetter(m *obs.Metrics, c *kafkax.Conn, k config.Kafka, stage string) *kafkax.DeadLetter {
	m.StageFamilies(stage, schemas.Reasons...) // every stage has a dead-letter writer, built with the stage
	d := &kafkax.DeadLetter{W: c.NewWriter(k, k.Topics.DLQ), Stage: stage,
		OnReject: func(reason string) { m.Rejected.WithLabelValues(stage, reason).Inc() }, OnTruncate: m.Truncated.WithLabelValues(stage).Inc}
	if k.MaxRecordBytes > 0 {
		d.W.BatchBytes = int64(k.MaxRecordBytes)
	}
	if k.AutoCreateTopics {
		d.Ensure = func(ctx context.Context) error {
			return c.EnsureTopics(ctx, k.ReplicationFactor, map[string]int{k.Topics.DLQ: k.PartitionsOf(k.Topics.DLQ)})
		}
	}
	return d
}

// hooks returns the consume-loop hooks that feed m for stage. A
// partition this consumer no longer holds after a rebalance loses its
// committed-offset series (another process exports it now).
func hooks(m *obs.Metrics, stage string) kafkax.Hooks {
	var mu sync.Mutex
	held := map[string]map[int]bool{} // topic → partitions with a committed-offset series from this consumer
	assigned := map[string]int{}      // topic → partitions assigned in the current generation
	return kafkax.Hooks{
		Fetched: func(topic string, _ int, n int) { m.Consumed.WithLabelValues(stage, topic).Add(float64(n)) },
		Batch: func(_ string, n int, d time.Duration) {
			m.BatchSize.WithLabelValues(stage).Observe(float64(n))
			m.HandleTime.WithLabelValues(stage).Observe(d.Seconds())
		},
		Retry: func(string, error) { m.Retries.WithLabelValues(stage).Inc() },
		Committed: func(topic string, partition int, offset int64) {
			mu.Lock()
			if held[topic] == nil {
				held[topic] = map[int]bool{}
			}
			held[topic][partition] = true
			mu.Unlock()
			m.Committed.WithLabelValues(stage, topic, strconv.Itoa(partition)).Set(float64(offset))
		},
		Rebalance: func(string) { m.Rebalances.WithLabelValues(stage).Inc() },
		Stalled: func(topic string, partition int, since time.Time, err error) {
			m.Stalls.Set(stage, topic, partition, since, err)
		},
		Unstalled: func(topic string, partition int) { m.Stalls.Clear(stage, topic, partition) },
		LogReset:  func(topic string, _ int) { m.LogResets.WithLabelValues(stage, topic).Inc() },
		Assigned: func(_ string, topic string, partitions []int) {
			m.SetJoined(stage)
			mine := map[int]bool{}
			for _, p := range partitions {
				mine[p] = true
			}
			mu.Lock()
			assigned[topic] = len(partitions) // called for each topic of the group
			n := 0
			for _, c := range assigned {
				n += c
			}
			m.Assigned.WithLabelValues(stage).Set(float64(n))
			for p := range held[topic] {
				if !mine[p] {
					m.Committed.DeleteLabelValues(stage, topic, strconv.Itoa(p))
					delete(held[topic], p)
				}
			}
			mu.Unlock()
		},
	}
}

// forget deletes stage's series of topics: their consumer ended for good.
func forget(m *obs.Metrics, stage string, topics []string) {
	for _, t := range topics {
		m.Committed.DeletePartialMatch(prometheus.Labels{"stage": stage, "topic": t})
		m.Consumed.DeleteLabelValues(stage, t)
	}
}

// consumerConfig returns the consume-loop settings of a stage: the shared
// consumer section plus the stage's group, topics and batch limits.
func consumerConfig(c config.Consumer, group string, topics []string, maxBatch int, maxWait time.Duration, log *slog.Logger, h kafkax.Hooks) kafkax.ConsumerConfig {
	return kafkax.ConsumerConfig{
		Group: group, Topics: topics, MaxBatch: maxBatch, MaxWait: maxWait,
		QueueSize: c.QueueSize, MaxFetchBytes: c.MaxFetchBytes, CommitInterval: c.CommitInterval,
		RetryMin: c.RetryMin, RetryMax: c.RetryMax,
		SessionTimeout: c.SessionTimeout, HeartbeatInterval: c.HeartbeatInterval, RebalanceTimeout: c.RebalanceTimeout,
		Logger: log, Hooks: h,
	}
}

// PrepareTopics creates topics (with k.PartitionsOf partitions) and the
// dead-letter topic when kafka.auto_create_topics is set. A Kafka that is
// not up yet is waited for, with capped exponential back-off and a WARN
// line naming the brokers tried, until ctx ends: roles start in any order.
// Only an error the brokers will answer again the same way (an invalid
// replication factor, a denied request) is returned.
func PrepareTopics(ctx context.Context, c *kafkax.Conn, k config.Kafka, topics ...string) error {
	if !k.AutoCreateTopics {
		return nil
	}
	want := map[string]int{k.Topics.DLQ: k.PartitionsOf(k.Topics.DLQ)}
	for _, t := range topics {
		want[t] = k.PartitionsOf(t)
	}
	return kafkax.Retry(ctx, "create topics", c.Brokers, func() error { return c.EnsureTopics(ctx, k.ReplicationFactor, want) })
}
