package e2e_test

import (
	"context"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/imstream/imstream/internal/plumbing/kafkax"
	"github.com/imstream/imstream/internal/tools/dlq"
	"github.com/imstream/imstream/internal/tools/testkit"
	"github.com/imstream/imstream/schemas"
)

// TestDLQRedrive: a pusher run with kafka.max_record_bytes too low
// dead-letters the push jobs of a MSG_PUSH to 3000 users with 19-digit
// uids (oversize) — the operator mistake docs/runbook.md describes, like a
// pusher older than the fanout. Fixed and re-driven, every entry lands in
// its push list exactly once; a second re-drive adds nothing.
func TestDLQRedrive(t *testing.T) {
	s := startStack(t, 1, 1)
	ctx := context.Background()
	s.procs["pusher"].Stop()
	_, low := s.start("pusher", "--kafka.max_record_bytes", "16384", "--schemas.max_bytes", "8192")
	producer := imServer(t, s.cfg, "s1", 1)
	const n = 3000
	receivers := make([]int64, n)
	for i := range receivers {
		receivers[i] = 1_000_000_000_000_000_000 + int64(i)
	}
	must(t, producer.Push(ctx, app, receivers, schemas.Message{Cmd: schemas.CmdIM, Sender: 1, Receiver: receivers[0], Content: "notice"}))
	must(t, producer.Push(ctx, app, []int64{42}, schemas.Message{Cmd: schemas.CmdIM, Sender: 1, Receiver: 42, Content: "small"}))

	conn, err := kafkax.NewConn(s.cfg.Kafka)
	must(t, err)
	var letters []dlq.Letter
	testkit.Eventually(t, 60*time.Second, "the push job dead-lettered", func() bool {
		letters, err = dlq.Read(ctx, conn, s.cfg.Kafka.Topics.DLQ, dlq.Filter{Reason: schemas.ReasonOversize, Topic: s.cfg.Kafka.Topics.Push})
		return err == nil && len(letters) > 0
	})
	rc := testkit.RedisClient(t, s.cfg.Redis.Addrs[0])
	testkit.Eventually(t, 60*time.Second, "the small push's entry", func() bool { return rc.LLen(ctx, "push_queue").Val() == 1 })

	// The pusher is fixed; then the dead letters are re-driven.
	low.Stop()
	s.start("pusher")
	cli := func(args ...string) string {
		t.Helper()
		args = append(args, "--kafka.brokers", s.cfg.Kafka.Brokers[0], "--redis.addrs", s.cfg.Redis.Addrs[0])
		out, err := exec.Command(s.bin, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("imstream %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	if out := cli("dlq", "list"); !strings.Contains(out, "oversize") || !strings.Contains(out, s.cfg.Kafka.Topics.Push) {
		t.Fatalf("dlq list does not name the oversize push jobs:\n%s", out)
	}
	if out := cli("dlq", "show", "--reason", "oversize", "--json", "--count", "1"); !strings.Contains(out, `"reason":"oversize`) {
		t.Fatalf("dlq show:\n%s", out)
	}
	out := cli("dlq", "redrive", "--reason", "oversize", "--topic", s.cfg.Kafka.Topics.Push)
	if !strings.Contains(out, "msg=re-driven") || !strings.Contains(out, "1 of 1 selected") {
		t.Fatalf("dlq redrive:\n%s", out)
	}
	testkit.Eventually(t, 60*time.Second, "every entry in its list", func() bool { return rc.LLen(ctx, "push_queue").Val() >= n+1 })
	testkit.WaitCaughtUp(t, s.cfg, s.cfg.Pusher.Group, s.cfg.Kafka.Topics.Push, 60*time.Second)

	// Again: the ledger and the pusher's watermarks keep it to once.
	if out := cli("dlq", "redrive", "--reason", "oversize", "--topic", s.cfg.Kafka.Topics.Push); !strings.Contains(out, "1 re-driven before") || strings.Contains(out, "msg=re-driven") {
		t.Fatalf("a second dlq redrive:\n%s", out)
	}
	testkit.WaitCaughtUp(t, s.cfg, s.cfg.Pusher.Group, s.cfg.Kafka.Topics.Push, 60*time.Second)
	seen := map[int64]int{}
	for _, e := range rc.LRange(ctx, "push_queue", 0, -1).Val() {
		var entry struct {
			Receiver int64 `json:"receiver"`
		}
		must(t, json.Unmarshal([]byte(e), &entry))
		seen[entry.Receiver]++
	}
	if len(seen) != n+1 {
		t.Errorf("%d receivers have entries, want %d", len(seen), n+1)
	}
	for r, c := range seen {
		if c != 1 {
			t.Errorf("receiver %d: %d entries, want 1", r, c)
		}
	}
}
