package kafkax_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/imstream/imstream/internal/plumbing/kafkax"
	"github.com/imstream/imstream/internal/tools/embedded"
	"github.com/imstream/imstream/internal/tools/testkit"
)

// TestPartitionReader: a range read returns the records of the range its
// filter keeps, in order; it finds the log started again (another record
// at the range's end, a log shorter than the range, the topic deleted and
// re-created) and records deleted from the log's start (DeleteRecords, as
// retention does), and says so with a *Gone rather than returning records
// of another log.
func TestPartitionReader(t *testing.T) {
	k := testkit.Kafka(t, embedded.KafkaOptions{})
	cfg := testkit.Config(k.Addr, "127.0.0.1:1")
	conn := kafkax.MustConn(cfg.Kafka)
	ctx := context.Background()
	const topic = "ranges"
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(conn.EnsureTopics(ctx, 1, map[string]int{topic: 1}))
	var recs []kafka.Message
	for i := range 20 {
		recs = append(recs, kafka.Message{Topic: topic, Key: fmt.Appendf(nil, "%d:%d", 7+i%2, i), Value: fmt.Appendf(nil, "v%d", i)})
	}
	testkit.Produce(t, cfg, recs...)
	all := testkit.ReadAll(t, cfg, topic)
	fp := func(off int) string { return kafkax.Fingerprint(&all[off]) }
	app8 := func(m *kafka.Message) bool { return m.Key[0] == '8' }

	r := conn.NewPartitionReader(topic, 0, 0)
	defer r.Close()
	values := func(ms []kafka.Message) string {
		var out []string
		for _, m := range ms {
			out = append(out, fmt.Sprintf("%d:%s", m.Offset, m.Value))
		}
		return fmt.Sprint(out)
	}
	got, err := r.Read(ctx, 4, 13, fp(13), app8)
	must(err)
	if want := "[5:v5 7:v7 9:v9 11:v11 13:v13]"; values(got) != want {
		t.Fatalf("read [4, 13] of app 8: %s, want %s", values(got), want)
	}
	// Again, from another place: the reader seeks.
	got, err = r.Read(ctx, 0, 2, fp(2), func(*kafka.Message) bool { return true })
	must(err)
	if want := "[0:v0 1:v1 2:v2]"; values(got) != want {
		t.Fatalf("read [0, 2]: %s, want %s", values(got), want)
	}

	gone := func(what string, err error, restarted bool, first int64) {
		t.Helper()
		var g *kafkax.Gone
		if !errors.As(err, &g) || g.Restarted != restarted || (!restarted && g.First != first) {
			t.Fatalf("%s: %v, want a *Gone (restarted %v, first %d)", what, err, restarted, first)
		}
	}
	_, err = r.Read(ctx, 4, 13, fp(12), app8)
	gone("another record at the range's end", err, true, 0)
	_, err = r.Read(ctx, 15, 25, "", app8)
	gone("a range past the log's end", err, true, 0)

	// The log's first 6 records deleted, as retention does.
	cl, err := kgo.NewClient(kgo.SeedBrokers(cfg.Kafka.Brokers...))
	must(err)
	defer cl.Close()
	req := kmsg.NewPtrDeleteRecordsRequest()
	rt := kmsg.NewDeleteRecordsRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewDeleteRecordsRequestTopicPartition()
	rp.Partition, rp.Offset = 0, 6
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	req.TimeoutMillis = 10_000
	resp, err := req.RequestWith(ctx, cl)
	must(err)
	if e := resp.Topics[0].Partitions[0].ErrorCode; e != 0 {
		t.Fatalf("DeleteRecords: error code %d", e)
	}
	got, err = r.Read(ctx, 2, 13, fp(13), app8)
	gone("a range partly deleted", err, false, 6)
	if want := "[7:v7 9:v9 11:v11 13:v13]"; values(got) != want {
		t.Fatalf("read [2, 13] after [0, 6) was deleted: %s, want what is left, %s", values(got), want)
	}
	_, err = r.Read(ctx, 1, 4, fp(4), app8)
	gone("a range wholly deleted", err, false, 6)

	// The topic deleted and re-created with as many records: the same
	// offsets hold other records.
	dresp, err := (&kafka.Client{Addr: kafka.TCP(cfg.Kafka.Brokers[0]), Timeout: 10 * time.Second}).DeleteTopics(ctx, &kafka.DeleteTopicsRequest{Topics: []string{topic}})
	must(err)
	must(dresp.Errors[topic])
	time.Sleep(200 * time.Millisecond)
	must(conn.EnsureTopics(ctx, 1, map[string]int{topic: 1}))
	for i := range recs {
		recs[i].Value = fmt.Appendf(nil, "new%d", i)
	}
	testkit.Produce(t, cfg, recs...)
	_, err = r.Read(ctx, 4, 13, fp(13), app8)
	if err != nil && !errors.As(err, new(*kafkax.Gone)) { // the old connection may fail first: read again
		_, err = r.Read(ctx, 4, 13, fp(13), app8)
	}
	gone("the topic re-created", err, true, 0)
}
