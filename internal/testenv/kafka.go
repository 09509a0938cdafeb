package testenv

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/imstream/imstream/internal/config"
	"github.com/imstream/imstream/internal/kafkax"
)

// EndOffsets returns the end offset of every partition of topic.
func EndOffsets(ctx context.Context, cfg config.Config, topic string) (map[int]int64, error) {
	conn := kafkax.NewConn(cfg.Kafka)
	n, err := conn.Partitions(ctx, topic)
	if err != nil {
		return nil, err
	}
	req := map[string][]kafka.OffsetRequest{}
	for p := 0; p < n; p++ {
		req[topic] = append(req[topic], kafka.LastOffsetOf(p))
	}
	resp, err := conn.Client().ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: req})
	if err != nil {
		return nil, err
	}
	out := map[int]int64{}
	for _, po := range resp.Topics[topic] {
		if po.Error != nil {
			return nil, po.Error
		}
		out[po.Partition] = po.LastOffset
	}
	return out, nil
}

// WaitCaughtUp waits until group has committed the end offset of every
// partition of topic, i.e. has handled everything produced so far.
func WaitCaughtUp(t testing.TB, cfg config.Config, group, topic string, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	conn := kafkax.NewConn(cfg.Kafka)
	for {
		ends, err := EndOffsets(ctx, cfg, topic)
		if err == nil {
			parts := make([]int, 0, len(ends))
			for p := range ends {
				parts = append(parts, p)
			}
			var resp *kafka.OffsetFetchResponse
			resp, err = conn.Client().OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: parts}})
			if err == nil {
				behind := false
				for _, po := range resp.Topics[topic] {
					if ends[po.Partition] > 0 && po.CommittedOffset < ends[po.Partition] {
						behind = true
					}
				}
				if !behind {
					return
				}
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("group %s did not catch up on %s within %s (last error: %v)", group, topic, d, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// ReadAll returns every record of topic up to its current end offsets.
func ReadAll(t testing.TB, cfg config.Config, topic string) []kafka.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ends, err := EndOffsets(ctx, cfg, topic)
	if errors.Is(err, kafka.UnknownTopicOrPartition) {
		return nil // never written
	}
	if err != nil {
		t.Fatalf("end offsets of %s: %v", topic, err)
	}
	var out []kafka.Message
	for p, end := range ends {
		if end == 0 {
			continue
		}
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: cfg.Kafka.Brokers, Topic: topic, Partition: p, MaxBytes: 4 << 20, MaxWait: 50 * time.Millisecond})
		for {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				r.Close()
				t.Fatalf("read %s/%d: %v", topic, p, err)
			}
			out = append(out, m)
			if m.Offset+1 >= end {
				break
			}
		}
		r.Close()
	}
	return out
}
