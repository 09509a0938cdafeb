package kafkax_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/segmentio/kafka-go"

	"github.com/imstream/imstream/internal/plumbing/kafkax"
	"github.com/imstream/imstream/internal/tools/embedded"
	"github.com/imstream/imstream/internal/tools/testkit"
)

// TestWriteRefusing: a record over the writer's size limit is refused
// (kafka-go checks it before sending anything); WriteRefusing names it
// and writes every other record, in order.
func TestWriteRefusing(t *testing.T) {
	k := testkit.Kafka(t, embedded.KafkaOptions{})
	ctx := context.Background()
	conn := &kafkax.Conn{Brokers: []string{k.Addr}}
	if err := conn.EnsureTopics(ctx, 1, map[string]int{"t": 1}); err != nil {
		t.Fatal(err)
	}
	w := &kafka.Writer{Addr: kafka.TCP(k.Addr), Topic: "t", BatchBytes: 1000, RequiredAcks: kafka.RequireAll, BatchTimeout: 1}
	defer w.Close()
	msgs := []kafka.Message{{Value: []byte("a")}, {Value: bytes.Repeat([]byte("x"), 2000)}, {Value: []byte("b")}, {Value: bytes.Repeat([]byte("y"), 3000)}}
	refused, err := kafkax.WriteRefusing(ctx, w, msgs...)
	if err != nil {
		t.Fatal(err)
	}
	if len(refused) != 2 || refused[1] == nil || refused[3] == nil || !kafkax.Refused(refused[1]) {
		t.Fatalf("refused %v, want records 1 and 3", refused)
	}
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: []string{k.Addr}, Topic: "t", Partition: 0})
	defer r.Close()
	for _, want := range []string{"a", "b"} {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if string(m.Value) != want {
			t.Fatalf("read %q, want %q", m.Value, want)
		}
	}
}
