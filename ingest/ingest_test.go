package ingest_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/imstream/imstream/ingest"
	"github.com/imstream/imstream/internal/plumbing/kafkax"
	"github.com/imstream/imstream/internal/tools/embedded"
	"github.com/imstream/imstream/internal/tools/testkit"
	"github.com/imstream/imstream/schemas"
)

// javaMurmur2 is an independent port of org.apache.kafka.common.utils.Utils.murmur2.
func javaMurmur2(data []byte) int32 {
	const seed, m, r = uint32(0x9747b28c), uint32(0x5bd1e995), 24
	n := len(data)
	h := seed ^ uint32(n)
	for i := 0; i+4 <= n; i += 4 {
		k := uint32(data[i]) | uint32(data[i+1])<<8 | uint32(data[i+2])<<16 | uint32(data[i+3])<<24
		k *= m
		k ^= k >> r
		k *= m
		h *= m
		h ^= k
	}
	switch n % 4 {
	case 3:
		h ^= uint32(data[n&^3+2]) << 16
		fallthrough
	case 2:
		h ^= uint32(data[n&^3+1]) << 8
		fallthrough
	case 1:
		h ^= uint32(data[n&^3])
		h *= m
	}
	h ^= h >> 13
	h *= m
	h ^= h >> 15
	return int32(h)
}

// javaPartition is Kafka's DefaultPartitioner for a keyed record.
func javaPartition(key string, n int) int {
	return int(uint32(javaMurmur2([]byte(key)))&0x7fffffff) % n
}

// TestMurmur2Vectors checks the reference port against Kafka's own
// UtilsTest vectors, and the producer's partitioner against it.
func TestMurmur2Vectors(t *testing.T) {
	vectors := map[string]int32{
		"21": -973932308, "foobar": -790332482, "a-little-bit-long-string": -985981536,
		"a-little-bit-longer-string": -1486304829, "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
		"abc": 479470107,
	}
	for k, want := range vectors {
		if got := javaMurmur2([]byte(k)); got != want {
			t.Errorf("murmur2(%q) = %d, want %d (Kafka UtilsTest)", k, got, want)
		}
	}
	keys := []string{"7:1001", "7:room:42", "7:group:55", "server:im-1", "1:1", "9999999:123456789"}
	for k := range vectors {
		keys = append(keys, k)
	}
	for _, n := range []int{1, 3, 12, 64} {
		for _, k := range keys {
			if got, want := kafkax.PartitionFor([]byte(k), n), javaPartition(k, n); got != want {
				t.Errorf("partition(%q, %d) = %d, Java picks %d", k, n, got, want)
			}
		}
	}
}

// TestProducerRecords: every call produces a record that schemas.Decode
// accepts, keyed as docs/protocol.md §1, on the partition a Java producer would pick.
func TestProducerRecords(t *testing.T) {
	k := testkit.Kafka(t, embedded.KafkaOptions{})
	ctx := context.Background()
	p, err := ingest.New(ctx, ingest.Config{
		Brokers: []string{k.Addr}, Server: "im-1", Epoch: 42, CreateTopics: true, Partitions: 12,
		HeartbeatInterval: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	msg := schemas.Message{Cmd: schemas.CmdIM, Sender: 1, Receiver: 1001, Content: "hi"}
	type want struct {
		topic, key string
		typ        schemas.Type
	}
	calls := []struct {
		do   func() error
		want want
	}{
		{func() error { return p.Subscribe(ctx, 7, 1001, true) }, want{"imr.presence", "7:1001", schemas.TypeSubscribe}},
		{func() error { return p.Unsubscribe(ctx, 7, 1001) }, want{"imr.presence", "7:1001", schemas.TypeUnsubscribe}},
		{func() error { return p.SubscribeRoom(ctx, 7, 42) }, want{"imr.presence", "7:room:42", schemas.TypeSubscribeRoom}},
		{func() error { return p.UnsubscribeRoom(ctx, 7, 42) }, want{"imr.presence", "7:room:42", schemas.TypeUnsubscribeRoom}},
		{func() error { return p.Publish(ctx, 7, 1001, msg, ingest.Meta{MsgID: 5, DeviceID: 6}) }, want{"imr.publish", "7:1001", schemas.TypePublish}},
		{func() error {
			return p.PublishGroup(ctx, 7, 55, schemas.Message{Cmd: schemas.CmdGroupIM, Sender: 1, Receiver: 55}, ingest.Meta{})
		}, want{"imr.publish", "7:group:55", schemas.TypePublishGroup}},
		{func() error {
			return p.PublishRoom(ctx, 7, 42, schemas.Message{Cmd: schemas.CmdRoomIM, Sender: 1, Receiver: 42}, ingest.Meta{})
		}, want{"imr.publish", "7:room:42", schemas.TypePublishRoom}},
		{func() error { return p.Push(ctx, 7, []int64{1001, 1002}, msg) }, want{"imr.publish.bulk", "7:1001", schemas.TypePush}}, // the bulk lane
	}
	for i, c := range calls {
		if err := c.do(); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	time.Sleep(350 * time.Millisecond) // a few heartbeats
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}

	got := map[string][]kafka.Message{}
	for _, topic := range []string{"imr.presence", "imr.publish", "imr.publish.bulk"} {
		for part := 0; part < 12; part++ {
			r := kafka.NewReader(kafka.ReaderConfig{Brokers: []string{k.Addr}, Topic: topic, Partition: part, MaxWait: 50 * time.Millisecond})
			last, err := kafka.DialLeader(ctx, "tcp", k.Addr, topic, part)
			if err != nil {
				t.Fatal(err)
			}
			end, _ := last.ReadLastOffset()
			last.Close()
			for i := int64(0); i < end; i++ {
				m, err := r.ReadMessage(ctx)
				if err != nil {
					t.Fatal(err)
				}
				got[topic] = append(got[topic], m)
			}
			r.Close()
		}
	}
	byType := map[schemas.Type][]kafka.Message{}
	for topic, ms := range got {
		for _, m := range ms {
			ev, err := schemas.Decode(m.Value, 0)
			if err != nil {
				t.Fatalf("%s record rejected by schemas.Decode: %v\n%s", topic, err, m.Value)
			}
			if want := javaPartition(string(m.Key), 12); m.Partition != want {
				t.Errorf("key %s on partition %d, Java producer picks %d", m.Key, m.Partition, want)
			}
			h := ev.Head()
			if h.Server != "im-1" || h.TS == 0 || h.ID == "" {
				t.Errorf("header %+v", h)
			}
			if pr, ok := ev.(*schemas.Presence); ok && pr.Epoch != 42 {
				t.Errorf("epoch %d", pr.Epoch)
			}
			byType[h.Type] = append(byType[h.Type], m)
		}
	}
	for _, c := range calls {
		ms := byType[c.want.typ]
		if len(ms) != 1 || ms[0].Topic != c.want.topic || string(ms[0].Key) != c.want.key {
			t.Errorf("%s: got %d records (%v), want 1 on %s key %s", c.want.typ, len(ms), ms, c.want.topic, c.want.key)
		}
	}
	if n := len(byType[schemas.TypeServerUp]); n != 1 {
		t.Errorf("server_up records: %d", n)
	}
	if n := len(byType[schemas.TypeHeartbeat]); n < 2 {
		t.Errorf("heartbeats: %d, want >= 2", n)
	}
	if n := len(byType[schemas.TypeServerDown]); n != 1 || string(byType[schemas.TypeServerDown][0].Key) != "server:im-1" {
		t.Errorf("server_down records: %d", n)
	}
}

// TestProducerWaitsForTopic: an IM server started before imstream's roles
// created their topics waits for the topic (up to TopicWait) instead of
// failing its first call; a topic that never comes is an error naming it.
func TestProducerWaitsForTopic(t *testing.T) {
	k := testkit.Kafka(t, embedded.KafkaOptions{})
	ctx := context.Background()
	p, err := ingest.New(ctx, ingest.Config{Brokers: []string{k.Addr}, Server: "im-1"})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(ctx)
	created := make(chan error, 1)
	sent := make(chan error, 1)
	go func() { sent <- p.Subscribe(ctx, 7, 1001, true) }()
	go func() {
		time.Sleep(300 * time.Millisecond) // the roles start later
		conn := &kafkax.Conn{Brokers: []string{k.Addr}}
		created <- conn.EnsureTopics(ctx, 1, map[string]int{"imr.presence": 3})
	}()
	if err := <-created; err != nil {
		t.Fatal(err)
	}
	if err := <-sent; err != nil {
		t.Fatalf("Subscribe before the topic existed: %v", err)
	}

	q, err := ingest.New(ctx, ingest.Config{Brokers: []string{k.Addr}, Server: "im-2", PublishTopic: "no.such.topic", TopicWait: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close(ctx)
	err = q.Publish(ctx, 7, 1, schemas.Message{Cmd: schemas.CmdIM, Sender: 1, Receiver: 1}, ingest.Meta{})
	if err == nil || !errors.Is(err, kafka.UnknownTopicOrPartition) {
		t.Fatalf("Publish to a topic that never comes: err %v, want UnknownTopicOrPartition", err)
	}
}
