package kafkax_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/imstream/imstream/internal/kafkax"
	"github.com/imstream/imstream/internal/tools/devstack"
	"github.com/imstream/imstream/internal/tools/testenv"
)

// TestOffsetsSeeTopicsCreatedElsewhere: a process whose transport has
// already cached the cluster's metadata (a presence role started before
// the fanout created imr.publish) reads the partitions, offsets and lag of
// a topic another process created a moment ago at once, not a metadata
// refresh later; a topic that does not exist is still reported unknown.
func TestOffsetsSeeTopicsCreatedElsewhere(t *testing.T) {
	k := testenv.Kafka(t, devstack.KafkaOptions{})
	cfg := testenv.Config(k.Addr, "127.0.0.1:1").Kafka
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	early := kafkax.MustConn(cfg)
	if _, _, err := early.Offsets(ctx, "later"); !errors.Is(err, kafka.UnknownTopicOrPartition) {
		t.Fatalf("offsets of a topic not created yet: %v, want unknown topic", err)
	}
	other := kafkax.MustConn(cfg)
	if err := other.EnsureTopics(ctx, 1, map[string]int{"later": 3}); err != nil {
		t.Fatal(err)
	}
	w := other.NewWriter(cfg, "later")
	defer w.Close()
	if err := kafkax.Write(ctx, w, kafka.Message{Key: []byte("k"), Value: []byte("v")}); err != nil {
		t.Fatal(err)
	}
	if n, err := early.Partitions(ctx, "later"); err != nil || n != 3 {
		t.Fatalf("partitions right after another process created the topic: %d, %v; want 3", n, err)
	}
	lag, err := early.Lag(ctx, "nobody", "later")
	if err != nil {
		t.Fatalf("lag right after another process created the topic: %v", err)
	}
	total := int64(0)
	for _, l := range lag {
		total += l
	}
	if len(lag) != 3 || total != 1 {
		t.Fatalf("lag %v, want 3 partitions holding 1 record", lag)
	}
	if _, err := early.Partitions(ctx, "never"); !errors.Is(err, kafka.UnknownTopicOrPartition) {
		t.Fatalf("partitions of a topic that does not exist: %v, want unknown topic", err)
	}
}
