package e2e_test

import (
	"context"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/imstream/imstream/internal/tools/testkit"
	"github.com/imstream/imstream/schemas"
)

// TestOutputRefused: the broker answers MESSAGE_TOO_LARGE to the fanout's
// first produce to imr.push. The partition moves on at once (the next push
// arrives; no batch is retried for it), the refused record's input is in
// imr.dlq with reason output_refused and its source coordinates, and the
// fanout says so: an ERROR log line, imstream_outputs_refused_total, and a
// warning line on /readyz, which still answers 200.
func TestOutputRefused(t *testing.T) {
	s := startStack(t, 1, 1)
	cl := s.kafka.Cluster()
	var refused atomic.Int64
	cl.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		if refused.Load() > 0 {
			cl.DropControl()
			return nil, nil, false
		}
		cl.KeepControl()
		r := req.(*kmsg.ProduceRequest)
		if len(r.Topics) == 0 || r.Topics[0].Topic != s.cfg.Kafka.Topics.Push {
			return nil, nil, false
		}
		refused.Add(1)
		resp := r.ResponseKind().(*kmsg.ProduceResponse)
		for _, rt := range r.Topics {
			st := kmsg.NewProduceResponseTopic()
			st.Topic = rt.Topic
			for _, rp := range rt.Partitions {
				sp := kmsg.NewProduceResponseTopicPartition()
				sp.Partition, sp.ErrorCode = rp.Partition, kerr.MessageTooLarge.Code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	im := imServer(t, s.cfg, "im-1", 1)
	ctx := context.Background()
	push := func(to int64, content string) {
		must(t, im.Push(ctx, app, []int64{to}, schemas.Message{Cmd: schemas.CmdIM, Sender: 1, Receiver: to, Content: content}))
	}
	push(9001, "refused")
	rc := testkit.RedisClient(t, s.cfg.Redis.Addrs[0])
	testkit.Eventually(t, 30*time.Second, "the refused input dead-lettered", func() bool { return count(deadLetters(t, s), "output_refused") == 1 })
	push(9002, "after")
	testkit.Eventually(t, 30*time.Second, "the next push in push_queue", func() bool { return rc.LLen(ctx, "push_queue").Val() == 1 })
	if got := rc.LIndex(ctx, "push_queue", 0).Val(); !strings.Contains(got, `"content":"after"`) {
		t.Fatalf("push_queue holds %s", got)
	}
	if n := refused.Load(); n != 1 {
		t.Fatalf("%d produce requests refused, want 1", n)
	}
	var letter string
	for _, m := range testkit.ReadAll(t, s.cfg, s.cfg.Kafka.Topics.DLQ) {
		for _, h := range m.Headers {
			if h.Key == "reason" {
				letter = string(h.Value) + " | " + string(m.Value)
			}
		}
	}
	if !strings.Contains(letter, "output_refused: imr.push record of") || !strings.Contains(letter, "Message Size Too Large") || !strings.Contains(letter, `"content":"refused"`) {
		t.Fatalf("dead letter: %s", letter)
	}
	if n := metric(t, s.fanout, `imstream_outputs_refused_total{stage="fanout",topic="imr.push"}`); n != 1 {
		t.Errorf("imstream_outputs_refused_total = %v, want 1", n)
	}
	if n := metric(t, s.fanout, `imstream_batch_retries_total{stage="fanout"}`); n != 0 {
		t.Errorf("%v fanout batches retried: a refused output must not be retried", n)
	}
	code, body := readyz(s.fanout[0])
	if code != 200 || !strings.Contains(body, "warning: outputs: 1 outputs refused") {
		t.Errorf("/readyz %d: %s", code, body)
	}
	if log, _ := os.ReadFile(s.procs["fanout"].Log); !strings.Contains(string(log), "output refused by the brokers") {
		t.Errorf("no log line for the refused output")
	}
}
