package testkit

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/imstream/imstream/internal/plumbing/config"
	"github.com/imstream/imstream/internal/plumbing/kafkax"
	"github.com/imstream/imstream/internal/plumbing/obs"
	"github.com/imstream/imstream/internal/plumbing/stage"
)

// EndOffsets returns the end offset of every partition of topic.
func EndOffsets(ctx context.Context, cfg config.Config, topic string) (map[int]int64, error) {
	_, end, err := kafkax.MustConn(cfg.Kafka).Offsets(ctx, topic)
	return end, err
}

// WaitCaughtUp waits until group has committed the end offset of every
// partition of topic, i.e. has handled everything produced so far.
func WaitCaughtUp(t testing.TB, cfg config.Config, group, topic string, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	conn := kafkax.MustConn(cfg.Kafka)
	for {
		lag, err := conn.Lag(ctx, group, topic)
		behind := err != nil
		for _, l := range lag {
			behind = behind || l > 0
		}
		if !behind {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("group %s did not catch up on %s within %s (lag %v, last error: %v)", group, topic, d, lag, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// ReadAll returns every record of topic up to its current end offsets. A
// partition whose reader makes no progress for 20 s is read again with a
// new reader (a reader can stall on a broker busy with a parallel test),
// three times before the test fails.
func ReadAll(t testing.TB, cfg config.Config, topic string) []kafka.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	ends, err := EndOffsets(ctx, cfg, topic)
	cancel()
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
		next := kafka.FirstOffset
		for attempt := 1; ; attempt++ {
			more, err := readPartition(cfg, topic, p, next, end)
			out = append(out, more...)
			if len(more) > 0 {
				next = more[len(more)-1].Offset + 1
			}
			if err == nil {
				break
			}
			if attempt == 3 {
				t.Fatalf("read %s/%d: %v", topic, p, err)
			}
		}
	}
	return out
}

// ReadAt returns the record of topic at partition p, offset off, and
// whether there is one (the test fails when the broker does not answer).
func ReadAt(t testing.TB, cfg config.Config, topic string, p int, off int64) (kafka.Message, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	ends, err := EndOffsets(ctx, cfg, topic)
	cancel()
	if err != nil {
		t.Fatalf("end offsets of %s: %v", topic, err)
	}
	if off < 0 || off >= ends[p] {
		return kafka.Message{}, false
	}
	for attempt := 1; ; attempt++ {
		ms, err := readPartition(cfg, topic, p, off, off+1)
		if err == nil || len(ms) > 0 {
			return firstAt(ms, off)
		}
		if errors.Is(err, kafka.OffsetOutOfRange) {
			return kafka.Message{}, false
		}
		if attempt == 3 {
			t.Fatalf("read %s/%d@%d: %v", topic, p, off, err)
		}
	}
}

func firstAt(ms []kafka.Message, off int64) (kafka.Message, bool) {
	if len(ms) == 0 || ms[0].Offset != off {
		return kafka.Message{}, false
	}
	return ms[0], true
}

// readPartition reads partition p of topic from offset from (or
// kafka.FirstOffset) up to end, and returns what it read when it stops
// making progress for 20 s.
func readPartition(cfg config.Config, topic string, p int, from, end int64) ([]kafka.Message, error) {
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: cfg.Kafka.Brokers, Topic: topic, Partition: p, MaxBytes: 4 << 20, MaxWait: 50 * time.Millisecond})
	defer r.Close()
	if err := r.SetOffset(from); err != nil {
		return nil, err
	}
	var out []kafka.Message
	for from < end {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		m, err := r.ReadMessage(ctx)
		cancel()
		if err != nil {
			return out, err
		}
		out = append(out, m)
		from = m.Offset + 1
	}
	return out, nil
}

// StageEnv is a stage env with a fresh registry and no reachable Kafka,
// for package tests that drive a stage's apply directly.
func StageEnv(cfg config.Config) stage.Env {
	cfg.Kafka.Brokers = []string{"127.0.0.1:1"}
	return StageEnvOn(cfg)
}

// StageEnvOn is a stage env with a fresh registry on cfg's brokers.
func StageEnvOn(cfg config.Config) stage.Env {
	reg := obs.NewRegistry()
	return stage.NewEnv(cfg, kafkax.MustConn(cfg.Kafka), obs.NewMetrics(reg), reg, nil)
}
