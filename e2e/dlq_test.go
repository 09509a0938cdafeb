package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

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
	cli := func(args ...string) string { return s.cli(t, args...) }
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
	onceEach(t, rc, n+1)
}

// beforePushJobs is the last commit whose pusher reads only push_job
// records: the release before push_jobs records.
const beforePushJobs = "f1ad65edb998646c1a40a0fbb24a36c5b44f3fde"

// TestDLQRedriveOlderPusher: the upgrade-order mistake docs/topics.md
// warns about, with a real older release: fanouts of this release (JSON
// records, batch_push_jobs on) beside a pusher built from the release
// before push_jobs records. That pusher dead-letters every push_jobs
// record (unknown_type) and appends the lone push_job records. Once the
// pusher is upgraded, `imstream dlq redrive` restores every entry exactly
// once; running it again adds nothing.
func TestDLQRedriveOlderPusher(t *testing.T) {
	old := testkit.ReleaseBinary(t, "..", beforePushJobs)
	s := startStack(t, 1, 1, "--kafka.internal_format", "json")
	ctx := context.Background()
	s.procs["pusher"].Stop()
	older, _ := testkit.StartOnFreePort(t, old, func(addr string) []string {
		return []string{"pusher", "--kafka.brokers", s.cfg.Kafka.Brokers[0], "--redis.addrs", s.cfg.Redis.Addrs[0], "--admin.listen", addr}
	})
	// 400 MSG_PUSH events in one write, to a receiver each: the fanout
	// reads them in batches and writes most jobs as push_jobs records.
	const n = 400
	var recs []kafkaMessage
	for i := range n {
		uid := int64(1_000_000_000_000_000_000 + i)
		ev, _ := json.Marshal(&schemas.Publish{Header: schemas.Header{V: 1, Type: schemas.TypePush, Server: "s1", AppID: app, TS: time.Now().UnixMilli()},
			Receivers: []int64{uid}, Msg: schemas.Message{Cmd: schemas.CmdIM, Sender: 1, Receiver: uid, Content: "notice"}})
		recs = append(recs, kafkaMessage{Topic: s.cfg.Kafka.Topics.Bulk, Key: []byte(fmt.Sprintf("%d:%d", app, uid)), Value: ev})
	}
	testkit.Produce(t, s.cfg, recs...)
	testkit.WaitCaughtUp(t, s.cfg, s.cfg.Fanout.Group, s.cfg.Kafka.Topics.Bulk, 60*time.Second)
	testkit.WaitCaughtUp(t, s.cfg, s.cfg.Pusher.Group, s.cfg.Kafka.Topics.Push, 60*time.Second)
	conn, err := kafkax.NewConn(s.cfg.Kafka)
	must(t, err)
	letters, err := dlq.Read(ctx, conn, s.cfg.Kafka.Topics.DLQ, dlq.Filter{Topic: s.cfg.Kafka.Topics.Push})
	must(t, err)
	if len(letters) == 0 {
		t.Fatal("the older pusher dead-lettered nothing: no push_jobs record was written")
	}
	for _, l := range letters {
		if l.Code != schemas.ReasonUnknownType {
			t.Fatalf("dead letter %+v: want unknown_type", l)
		}
	}
	rc := testkit.RedisClient(t, s.cfg.Redis.Addrs[0])
	before := rc.LLen(ctx, "push_queue").Val()
	t.Logf("the older pusher: %d push_jobs records dead-lettered, %d lone jobs appended", len(letters), before)

	// The pusher is upgraded; then the dead letters are re-driven.
	older.Stop()
	s.start("pusher")
	cli := func(args ...string) string { return s.cli(t, args...) }
	if out := cli("dlq", "redrive", "--topic", s.cfg.Kafka.Topics.Push); !strings.Contains(out, fmt.Sprintf("%d of %d selected", len(letters), len(letters))) {
		t.Fatalf("dlq redrive:\n%s", out)
	}
	testkit.Eventually(t, 60*time.Second, "every entry in its list", func() bool { return rc.LLen(ctx, "push_queue").Val() >= n })
	testkit.WaitCaughtUp(t, s.cfg, s.cfg.Pusher.Group, s.cfg.Kafka.Topics.Push, 60*time.Second)
	if out := cli("dlq", "redrive", "--topic", s.cfg.Kafka.Topics.Push); strings.Contains(out, "msg=re-driven") {
		t.Fatalf("a second dlq redrive re-drove again:\n%s", out)
	}
	testkit.WaitCaughtUp(t, s.cfg, s.cfg.Pusher.Group, s.cfg.Kafka.Topics.Push, 60*time.Second)
	onceEach(t, rc, n)
}

// cli runs `imstream args...` against the stack and returns its output,
// failing the test when it exits non-zero.
func (s *stack) cli(t *testing.T, args ...string) string {
	t.Helper()
	args = append(args, "--kafka.brokers", s.cfg.Kafka.Brokers[0], "--redis.addrs", s.cfg.Redis.Addrs[0])
	out, err := exec.Command(s.bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("imstream %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// onceEach checks that push_queue holds one entry for each of n receivers.
func onceEach(t *testing.T, rc *redis.Client, n int) {
	t.Helper()
	seen := map[int64]int{}
	for _, e := range rc.LRange(context.Background(), "push_queue", 0, -1).Val() {
		var entry struct {
			Receiver int64 `json:"receiver"`
		}
		must(t, json.Unmarshal([]byte(e), &entry))
		seen[entry.Receiver]++
	}
	if len(seen) != n {
		t.Errorf("%d receivers have entries, want %d", len(seen), n)
	}
	for r, c := range seen {
		if c != 1 {
			t.Errorf("receiver %d: %d entries, want 1", r, c)
		}
	}
}
