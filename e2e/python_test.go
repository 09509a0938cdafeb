package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/imstream/imstream/internal/plumbing/kafkax"
	"github.com/imstream/imstream/internal/tools/testkit"
)

// pythonWithKafka finds a python3 that imports confluent_kafka: Debian's
// python3-confluent-kafka installs it for /usr/bin/python3, which may not
// be the first python3 on PATH.
func pythonWithKafka(t *testing.T) string {
	for _, py := range []string{"/usr/bin/python3", "python3"} {
		if exec.Command(py, "-c", "import confluent_kafka").Run() == nil {
			return py
		}
	}
	t.Fatal("no python3 with confluent_kafka: run `make test`, which installs Debian's python3-confluent-kafka (or pip install confluent-kafka)")
	return ""
}

// TestPythonIMServer runs examples/python/imserver.py — an IM server written
// from docs/protocol.md on librdkafka — against a running imstream: its
// real-time messages must be delivered to its other server once each and in
// order, its offline IM and MSG_PUSH must be in push_queue, and every
// record it produced must sit on the partition a Java producer would pick.
func TestPythonIMServer(t *testing.T) {
	py := pythonWithKafka(t)
	s := startStack(t, 1, 1)
	cmd := exec.Command(py, "../examples/python/imserver.py", "--demo", "--heartbeat", "0.5", "--brokers", s.cfg.Kafka.Brokers[0])
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	done := make(chan error, 1)
	must(t, cmd.Start())
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("imserver.py: %v\nstdout:\n%s\nstderr:\n%s", err, out.String(), errb.String())
		}
	case <-time.After(3 * time.Minute):
		_ = cmd.Process.Kill()
		t.Fatalf("imserver.py did not finish\nstdout:\n%s\nstderr:\n%s", out.String(), errb.String())
	}
	t.Logf("imserver.py:\n%s", out.String())
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var sum struct {
		Sent      int  `json:"rt_sent"`
		Delivered int  `json:"rt_delivered"`
		InOrder   bool `json:"in_order"`
	}
	must(t, json.Unmarshal([]byte(lines[len(lines)-1]), &sum))
	if sum.Sent != 50 || sum.Delivered != 50 || !sum.InOrder {
		t.Errorf("summary %s: want 50 real-time messages delivered once each, in order", lines[len(lines)-1])
	}

	rc := testkit.RedisClient(t, s.cfg.Redis.Addrs[0])
	want := []string{
		`{"appid":7,"content":"py-offline-im","receiver":5002,"sender":1}`,
		`{"appid":7,"content":"py-push","receiver":5003,"sender":1}`,
		`{"appid":7,"content":"py-push","receiver":5004,"sender":1}`,
	}
	testkit.Eventually(t, 30*time.Second, "the Python server's push entries", func() bool {
		return rc.LLen(context.Background(), "push_queue").Val() >= int64(len(want))
	})
	got := rc.LRange(context.Background(), "push_queue", 0, -1).Val()
	sort.Strings(got)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("push_queue = %q\nwant %q", got, want)
	}

	// librdkafka with partitioner=murmur2_random puts each key where Java does.
	checked := 0
	for _, topic := range []string{s.cfg.Kafka.Topics.Presence, s.cfg.Kafka.Topics.Publish, s.cfg.Kafka.Topics.Bulk} {
		for _, m := range testkit.ReadAll(t, s.cfg, topic) {
			if !bytes.Contains(m.Value, []byte(`"server":"py-`)) {
				continue
			}
			parts := make([]int, 4)
			for i := range parts {
				parts[i] = i
			}
			if want := kafkax.Partitioner.Balance(m, parts...); m.Partition != want {
				t.Errorf("%s key %s on partition %d, murmur2 says %d", topic, m.Key, m.Partition, want)
			}
			checked++
		}
	}
	if checked < 50 {
		t.Errorf("checked the partitions of %d Python records, want >= 50", checked)
	}
	// Dead letters would mean the Python records broke the contract.
	for _, m := range testkit.ReadAll(t, s.cfg, s.cfg.Kafka.Topics.DLQ) {
		if bytes.Contains(m.Value, []byte(`"server":"py-`)) {
			t.Errorf("a Python record was dead-lettered: %s", m.Value)
		}
	}
}
