package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/imstream/imstream/internal/devstack"
	"github.com/imstream/imstream/internal/kafkax"
	"github.com/imstream/imstream/internal/testenv"
	"github.com/imstream/imstream/schemas"
)

// TestLogIncarnations starts again, under running roles, the logs they
// read — imr.publish deleted and re-created, then the broker replaced by an
// empty one on the same address — and checks that every offline message of
// every log lands in its push list exactly once, with no role restarted,
// and that the restart is counted.
func TestLogIncarnations(t *testing.T) {
	port, err := devstack.FreePort()
	must(t, err)
	startKafka := func() *devstack.Kafka {
		k, err := devstack.StartKafka(devstack.KafkaOptions{Port: port, Partitions: 4})
		must(t, err)
		return k
	}
	k := startKafka()
	t.Cleanup(func() { k.Close() })
	r := testenv.Redis(t, devstack.RedisOptions{})
	cfg := testenv.Config(k.Addr, r.Addr)
	s := &stack{t: t, bin: testenv.Binary(t, ".."), cfg: cfg}
	presence, _ := s.start("presence")
	s.admins = []string{presence}
	fanout, _ := s.start("fanout")
	s.pusher, _ = s.start("pusher")
	rc := testenv.RedisClient(t, r.Addr)
	ctx := context.Background()

	sent := map[string]bool{}
	publish := func(run string, n int) {
		t.Helper()
		enc := newPublishEncoder(cfg.Kafka.Topics.Publish)
		var msgs []kafka.Message
		for i := 0; i < n; i++ {
			content := fmt.Sprintf("%s-%d", run, i)
			sent[content] = true
			msgs = append(msgs, enc(int64(100+i%10), content))
		}
		testenv.Produce(t, cfg, msgs...)
	}
	landed := func(what string) {
		t.Helper()
		testenv.Eventually(t, 90*time.Second, what, func() bool {
			n, _ := rc.LLen(ctx, "push_queue").Result()
			return n >= int64(len(sent))
		})
		time.Sleep(time.Second) // anything doubled would land by now
		entries, err := rc.LRange(ctx, "push_queue", 0, -1).Result()
		must(t, err)
		seen := map[string]int{}
		for _, e := range entries {
			seen[pushContent(t, e)]++
		}
		for c := range sent {
			if seen[c] != 1 {
				t.Errorf("%s: %q landed %d times", what, c, seen[c])
			}
		}
		if len(entries) != len(sent) {
			t.Errorf("%s: %d entries for %d messages", what, len(entries), len(sent))
		}
		if t.Failed() {
			t.FailNow()
		}
	}

	publish("first", 300)
	landed("the first log's messages")

	// An operator deletes and re-creates imr.publish.
	conn := kafkax.MustConn(cfg.Kafka)
	resp, err := conn.Client().DeleteTopics(ctx, &kafka.DeleteTopicsRequest{Topics: []string{cfg.Kafka.Topics.Publish}})
	must(t, err)
	for _, e := range resp.Errors {
		must(t, e)
	}
	time.Sleep(500 * time.Millisecond)
	must(t, conn.EnsureTopics(ctx, 1, map[string]int{cfg.Kafka.Topics.Publish: 4}))
	publish("recreated", 300)
	landed("the re-created topic's messages")
	if n := metric(t, []string{fanout}, `imstream_log_resets_total{stage="fanout",topic="imr.publish"}`); n < 1 {
		t.Errorf("fanout counted %v log resets, want ≥ 1", n)
	}

	// The broker is replaced by an empty one on the same address: every
	// log and every committed offset is gone, Redis keeps its watermarks.
	k.Close()
	k = startKafka()
	publish("emptied", 300)
	landed("the emptied broker's messages")
	if n := metric(t, []string{s.pusher}, `imstream_skipped_total{stage="pusher",reason="repeat"}`); n != 0 {
		t.Logf("pusher skipped %v repeats (replays after the broker change)", n)
	}
}

// newPublishEncoder returns a function building a persistent IM publish
// for an offline receiver, keyed as docs/protocol.md says.
func newPublishEncoder(topic string) func(receiver int64, content string) kafka.Message {
	n := 0
	return func(receiver int64, content string) kafka.Message {
		n++
		ev := schemas.Publish{Header: schemas.Header{V: 1, Type: schemas.TypePublish, Server: "im-1", AppID: app, TS: time.Now().UnixMilli()},
			Receiver: receiver, MsgID: int64(n), Msg: schemas.Message{Cmd: schemas.CmdIM, Sender: 1, Receiver: receiver, Content: content}}
		b, _ := json.Marshal(&ev)
		return kafka.Message{Topic: topic, Key: []byte(fmt.Sprintf("%d:%d", app, receiver)), Value: b}
	}
}

// pushContent returns the content of a push_queue entry.
func pushContent(t *testing.T, entry string) string {
	var e struct {
		Content string `json:"content"`
	}
	if err := json.Unmarshal([]byte(entry), &e); err != nil {
		t.Fatalf("push entry %q: %v", entry, err)
	}
	return e.Content
}
