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
