package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/imstream/imstream/internal/plumbing/kafkax"
	"github.com/imstream/imstream/internal/tools/embedded"
	"github.com/imstream/imstream/internal/tools/testkit"
	"github.com/imstream/imstream/schemas"
)

// TestLogIncarnations starts again, under running roles, the logs they
// read — imr.publish deleted and re-created, then the broker replaced by an
// empty one on the same address — and checks that every offline message of
// every log lands in its push list exactly once, with no role restarted,
// and that the restart is counted.
func TestLogIncarnations(t *testing.T) {
	port, err := embedded.FreePort()
	must(t, err)
	startKafka := func() *embedded.Kafka {
		k, err := embedded.StartKafka(embedded.KafkaOptions{Port: port, Partitions: 4})
		must(t, err)
		return k
	}
	k := startKafka()
	t.Cleanup(func() { k.Close() })
	r := testkit.Redis(t, embedded.RedisOptions{})
	cfg := testkit.Config(k.Addr, r.Addr)
	s := &stack{t: t, bin: testkit.Binary(t, ".."), cfg: cfg}
	presence, _ := s.start("presence")
	s.admins = []string{presence}
	fanout, _ := s.start("fanout")
	s.pusher, _ = s.start("pusher")
	rc := testkit.RedisClient(t, r.Addr)
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
		testkit.Produce(t, cfg, msgs...)
	}
	landed := func(what string) {
		t.Helper()
		testkit.Eventually(t, 90*time.Second, what, func() bool {
			n, _ := rc.LLen(ctx, "push_queue").Result()
			return n >= int64(len(sent))
		})
		// Anything doubled lands before the fanout and the pusher commit
		// past what they read.
		testkit.WaitCaughtUp(t, cfg, cfg.Fanout.Group, cfg.Kafka.Topics.Publish, 60*time.Second)
		testkit.WaitCaughtUp(t, cfg, cfg.Pusher.Group, cfg.Kafka.Topics.Push, 60*time.Second)
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
	must(t, deleteTopic(ctx, cfg.Kafka.Brokers, cfg.Kafka.Topics.Publish))
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

// deleteTopic deletes topic, asking each broker until the controller
// answers (kafka-go sends DeleteTopics to the address it is given).
func deleteTopic(ctx context.Context, brokers []string, topic string) error {
	var err error
	for _, b := range brokers {
		var resp *kafka.DeleteTopicsResponse
		resp, err = (&kafka.Client{Addr: kafka.TCP(b), Timeout: 10 * time.Second}).DeleteTopics(ctx, &kafka.DeleteTopicsRequest{Topics: []string{topic}})
		if err == nil {
			err = resp.Errors[topic]
		}
		if err == nil {
			return nil
		}
	}
	return fmt.Errorf("delete topic %s: %w", topic, err)
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

// TestRecordAtSizeLimit sends, to every topic a role consumes, a record just
// under the broker's maximum message size (far over the schema limit) and
// then a normal event behind it on the same partition: the big one must be
// dead-lettered (truncated, since the dead letter's headers do not fit) and
// the normal one applied — no partition blocks.
func TestRecordAtSizeLimit(t *testing.T) {
	s := startStack(t, 1, 1)
	cfg := s.cfg
	ctx := context.Background()
	rc := testkit.RedisClient(t, cfg.Redis.Addrs[0])
	// kfake's message.max.bytes is 1048588 and kafka-go's writer refuses
	// records over 1 MiB: the value leaves room for the record's own
	// framing, not for the dead letter's headers.
	big := bytesOf('x', 1048588-100)
	key := []byte(fmt.Sprintf("%d:%d", app, 101))
	enc := newPublishEncoder(cfg.Kafka.Topics.Publish)
	testkit.Produce(t, cfg,
		kafka.Message{Topic: cfg.Kafka.Topics.Publish, Key: key, Value: big},
		kafka.Message{Topic: cfg.Kafka.Topics.Presence, Key: []byte("7:5"), Value: big},
		kafka.Message{Topic: cfg.Kafka.Topics.Groups, Key: []byte("7:55"), Value: big},
	)
	testkit.Produce(t, cfg, enc(101, "after-the-big-one"))
	sub, _ := json.Marshal(&schemas.Presence{Header: schemas.Header{V: 1, Type: schemas.TypeSubscribe, Server: "im-1", AppID: app}, Epoch: 1, UID: 5, Online: boolPtr(true)})
	up, _ := json.Marshal(&schemas.Presence{Header: schemas.Header{V: 1, Type: schemas.TypeServerUp, Server: "im-1", AppID: app}, Epoch: 1})
	grp, _ := json.Marshal(&schemas.Group{Header: schemas.Header{V: 1, Type: schemas.TypeGroupCreate, Server: "backend", AppID: app}, GroupID: 55, Members: []int64{1, 2}})
	testkit.Produce(t, cfg,
		kafka.Message{Topic: cfg.Kafka.Topics.Presence, Key: []byte("server:im-1"), Value: up},
		kafka.Message{Topic: cfg.Kafka.Topics.Presence, Key: []byte("7:5"), Value: sub},
		kafka.Message{Topic: cfg.Kafka.Topics.Groups, Key: []byte("7:55"), Value: grp},
	)
	testkit.Eventually(t, 60*time.Second, "the event behind the big record to land", func() bool {
		n, _ := rc.LLen(ctx, "push_queue").Result()
		return n == 1
	})
	testkit.Eventually(t, 60*time.Second, "the subscribe behind the big record to apply", func() bool {
		on, _ := s.online(t, 5)
		return on
	})
	testkit.WaitCaughtUp(t, cfg, cfg.Groups.Group, cfg.Kafka.Topics.Groups, 60*time.Second)
	var truncated int
	for _, m := range testkit.ReadAll(t, cfg, cfg.Kafka.Topics.DLQ) {
		h := map[string]string{}
		for _, x := range m.Headers {
			h[x.Key] = string(x.Value)
		}
		if h["truncated"] == "true" && h["original_size"] == fmt.Sprint(len(big)) && h["sha256"] != "" && len(m.Value) <= kafkax.TruncateAt {
			truncated++
		}
	}
	if truncated != 3 {
		t.Errorf("%d truncated dead letters, want 3 (publish, presence, groups)", truncated)
	}
	admins := append(append([]string{}, s.admins...), s.fanout...)
	if n := metric(t, admins, `imstream_dead_letters_truncated_total{stage="fanout"}`); n != 1 {
		t.Errorf("fanout counted %v truncated dead letters, want 1", n)
	}
}

func bytesOf(c byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = c
	}
	return b
}

func boolPtr(b bool) *bool { return &b }
