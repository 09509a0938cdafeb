package kafkax

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/imstream/imstream/internal/plumbing/config"
	"github.com/imstream/imstream/internal/plumbing/tick"
)

// Partitioner is the Java/librdkafka-compatible murmur2 partitioner: the
// same key lands on the same partition whatever the producer's language.
var Partitioner kafka.Balancer = &kafka.Murmur2Balancer{Consistent: true}

// PartitionFor returns the partition Java's default partitioner picks for
// key among n partitions.
func PartitionFor(key []byte, n int) int {
	parts := make([]int, n)
	for i := range parts {
		parts[i] = i
	}
	return Partitioner.Balance(kafka.Message{Key: key}, parts...)
}

// NewWriter returns a synchronous writer with imstream's defaults: murmur2
// partitioning, acks from all in-sync replicas, and a linger of
// cfg.Linger (kafka-go's default of 1s would stall a lone event). The topic
// is set per message when topic is "".
func (c *Conn) NewWriter(cfg config.Kafka, topic string) *kafka.Writer {
	return &kafka.Writer{
		Addr:         kafka.TCP(c.Brokers...),
		Topic:        topic,
		Balancer:     Partitioner,
		RequiredAcks: kafka.RequireAll,
		BatchTimeout: max(cfg.Linger, time.Microsecond),
		BatchSize:    cfg.BatchSize,
		BatchBytes:   1 << 20, // a produce batch must stay under the brokers' message.max.bytes (1 MiB by default)
		WriteTimeout: cfg.WriteTimeout,
		MaxAttempts:  5,
		Transport:    c.writerTransport(),
		Compression:  codec(cfg.Compression),
	}
}

// codec is kafka.compression's codec (none: no compression).
func codec(name string) kafka.Compression {
	switch name {
	case "lz4":
		return kafka.Lz4
	case "zstd":
		return kafka.Zstd
	case "snappy":
		return kafka.Snappy
	case "gzip":
		return kafka.Gzip
	}
	return 0
}

// NoLinger makes w write what it is given at once instead of waiting
// kafka.linger for company: for callers that batch themselves (they hand
// over whatever is waiting) and carry latency-sensitive records. It
// returns w.
func NoLinger(w *kafka.Writer) *kafka.Writer {
	w.BatchTimeout = time.Microsecond // kafka-go takes 0 as its 1 s default
	return w
}

func (c *Conn) writerTransport() kafka.RoundTripper {
	switch {
	case c.writers != nil:
		return c.writers
	case c.Transport != nil: // a Conn built as a literal
		return c.Transport
	}
	return nil // kafka-go's default transport
}

// Write writes msgs, retrying temporary failures with back-off for up to
// writePatience (or until ctx ends), then reports the last error, so that
// the caller's own retry is logged and counted rather than this one going
// on silently. A record is never reported written unless the broker
// acknowledged it. A topic that does not exist is retried for
// unknownTopicPatience only, then reported (errors.Is(err,
// kafka.UnknownTopicOrPartition)): the caller may have to create it again (a
// topic deleted, a cluster that lost its data).
func Write(ctx context.Context, w *kafka.Writer, msgs ...kafka.Message) error {
	backoff := tick.Backoff{Min: 50 * time.Millisecond, Max: 2 * time.Second}
	start := time.Now()
	for {
		err := w.WriteMessages(ctx, msgs...)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("kafka: write: %w", err)
		}
		if !retryable(err) || time.Since(start) > writePatience || (UnknownTopic(err) && time.Since(start) > unknownTopicPatience) {
			return fmt.Errorf("kafka: write: %w", err)
		}
		if !backoff.Wait(ctx) {
			return fmt.Errorf("kafka: write: %w", err)
		}
	}
}

// writePatience is how long Write retries a temporary failure itself.
const writePatience = 30 * time.Second

// unknownTopicPatience is how long Write retries a topic the brokers do not
// know (a topic just created may take a moment to be known everywhere).
const unknownTopicPatience = 5 * time.Second

// UnknownTopic reports whether a Write error means a topic or partition
// does not exist.
func UnknownTopic(err error) bool {
	return anyWriteError(err, func(e error) bool { return errors.Is(e, kafka.UnknownTopicOrPartition) })
}

// anyWriteError reports whether is holds for err or, when err carries
// kafka-go's per-message WriteErrors, for one of them.
func anyWriteError(err error, is func(error) bool) bool {
	var we kafka.WriteErrors
	if errors.As(err, &we) {
		for _, e := range we {
			if e != nil && is(e) {
				return true
			}
		}
		return false
	}
	return is(err)
}

// retryable reports whether a failed write may succeed when retried: every
// per-message error is temporary (a record too large never fits).
func retryable(err error) bool {
	var we kafka.WriteErrors
	if errors.As(err, &we) {
		for _, e := range we {
			if e != nil && !IsTemporary(e) {
				return false
			}
		}
		return true
	}
	return IsTemporary(err)
}

// Refused reports whether a write error is the brokers (or kafka-go, for a
// record over the writer's BatchBytes) refusing a record for a reason no
// retry fixes: too large, or invalid.
func Refused(err error) bool {
	var mtl kafka.MessageTooLargeError
	return errors.As(err, &mtl) || errors.Is(err, kafka.MessageSizeTooLarge) || errors.Is(err, kafka.RecordListTooLarge) ||
		errors.Is(err, kafka.InvalidRecord) || errors.Is(err, kafka.InvalidTimestamp)
}

// WriteRefusing writes msgs as Write does, except that records refused for
// a reason no retry fixes (Refused) are left out instead of failing the
// write for ever: their indexes in msgs come back in refused, with why, and
// every other record is written. err is a failure of the other kind (the
// caller retries all of msgs; records already written are written again).
func WriteRefusing(ctx context.Context, w *kafka.Writer, msgs ...kafka.Message) (refused map[int]error, err error) {
	idx := make([]int, len(msgs))
	for i := range idx {
		idx[i] = i
	}
	for len(msgs) > 0 {
		err := Write(ctx, w, msgs...)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil, err
		}
		retry, retryIdx := msgs[:0:0], idx[:0:0]
		var mtl kafka.MessageTooLargeError
		var we kafka.WriteErrors
		switch {
		case errors.As(err, &mtl): // refused before anything was sent
			for i, m := range msgs {
				if sameRecord(m, mtl.Message) {
					if refused == nil {
						refused = map[int]error{}
					}
					refused[idx[i]] = fmt.Errorf("kafka: write: %w", mtl)
					retry = append(retry, msgs[i+1:]...)
					retryIdx = append(retryIdx, idx[i+1:]...)
					break
				}
				retry, retryIdx = append(retry, m), append(retryIdx, idx[i])
			}
			if len(retry) == len(msgs) {
				return nil, err // not one of ours: cannot tell which
			}
		case errors.As(err, &we) && len(we) == len(msgs):
			n := 0
			for i, e := range we {
				switch {
				case e == nil: // written
				case Refused(e):
					if refused == nil {
						refused = map[int]error{}
					}
					refused[idx[i]] = fmt.Errorf("kafka: write: %w", e)
					n++
				default:
					retry, retryIdx = append(retry, msgs[i]), append(retryIdx, idx[i])
				}
			}
			if n == 0 {
				return nil, err
			}
		default:
			return nil, err
		}
		msgs, idx = retry, retryIdx
	}
	return refused, nil
}

// sameRecord reports whether a and b are the same record (the same bytes in
// memory: kafka-go hands back a copy of the Message struct).
func sameRecord(a, b kafka.Message) bool {
	return len(a.Value) == len(b.Value) && len(a.Key) == len(b.Key) && a.Topic == b.Topic &&
		(len(a.Value) == 0 || &a.Value[0] == &b.Value[0])
}
