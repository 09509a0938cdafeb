package kafkax

import (
	"context"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/imstream/imstream/internal/config"
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
		BatchBytes:   16 << 20,
		WriteTimeout: cfg.WriteTimeout,
		MaxAttempts:  5,
		Transport:    c.Transport,
	}
}

// Write writes msgs, retrying temporary failures with back-off until ctx
// ends. A record is never reported written unless the broker acknowledged it.
func Write(ctx context.Context, w *kafka.Writer, msgs ...kafka.Message) error {
	backoff := 50 * time.Millisecond
	for {
		err := w.WriteMessages(ctx, msgs...)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("kafka: write: %w", err)
		}
		if !IsTemporary(err) && !isWriteErrors(err) {
			return fmt.Errorf("kafka: write: %w", err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kafka: write: %w", err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

func isWriteErrors(err error) bool {
	_, ok := err.(kafka.WriteErrors)
	return ok
}
