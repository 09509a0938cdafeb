package e2e_test

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/imstream/imstream/ingest"
	"github.com/imstream/imstream/internal/tools/embedded"
	"github.com/imstream/imstream/internal/tools/testkit"
	"github.com/imstream/imstream/schemas"
)

// readyz returns /readyz's status code and body (0 when it does not answer).
func readyz(addr string) (int, string) {
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestStartOrderAndReadiness: `imstream all` started 10 s before Kafka
// exists waits for it (503 naming Kafka meanwhile), becomes ready and
// routes once Kafka is up; Kafka stopped → 503 within 30 s, back → 200; a
// partition whose batch keeps failing → 503 naming it, 200 once it moves.
func TestStartOrderAndReadiness(t *testing.T) {
	bin := testkit.Binary(t, "..")
	r := testkit.Redis(t, embedded.RedisOptions{})
	kport, err := embedded.FreePort()
	must(t, err)
	kaddr := "127.0.0.1:" + strconv.Itoa(kport)
	cfg := testkit.Config(kaddr, r.Addr)
	s := &stack{t: t, bin: bin, cfg: cfg}
	admin, proc := s.start("all", "--admin.stuck_after", "3s", "--admin.kafka_down_after", "5s")

	time.Sleep(10 * time.Second)
	if proc.Exited() {
		t.Fatal("imstream all exited while Kafka was not up yet")
	}
	code, body := readyz(admin)
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "kafka "+kaddr) {
		t.Fatalf("before Kafka: /readyz %d %q, want 503 naming kafka %s", code, body, kaddr)
	}

	startKafka := func() *embedded.Kafka {
		k, err := embedded.StartKafka(embedded.KafkaOptions{Port: kport, Partitions: 4})
		must(t, err)
		return k
	}
	k := startKafka()
	defer func() { k.Close() }()
	testkit.Eventually(t, 60*time.Second, "ready once Kafka is up", func() bool { c, _ := readyz(admin); return c == http.StatusOK })

	ctx := context.Background()
	p, err := ingest.New(ctx, ingest.Config{Brokers: []string{kaddr}, Server: "im-1", CreateTopics: true, Partitions: 4})
	must(t, err)
	defer p.Close(ctx)
	rc := testkit.RedisClient(t, r.Addr)
	send := func(content string) {
		// As an IM server would: retry until the brokers take it (a new,
		// empty cluster has no topics until a role or the producer's first
		// metadata request creates them).
		testkit.Eventually(t, 60*time.Second, "push "+content+" accepted", func() bool {
			return p.Push(ctx, app, []int64{9001}, schemas.Message{Cmd: 4, Sender: 1, Receiver: 9001, Content: content}) == nil
		})
	}
	push := func(content string) {
		send(content)
		testkit.Eventually(t, 60*time.Second, content+" in push_queue", func() bool {
			for _, e := range rc.LRange(ctx, "push_queue", 0, -1).Val() {
				if strings.Contains(e, content) {
					return true
				}
			}
			return false
		})
	}
	push("after-start")

	// Kafka stops: 503 within 30 s, naming Kafka; back: 200.
	k.Close()
	stopped := time.Now()
	testkit.Eventually(t, 30*time.Second, "503 after Kafka stopped", func() bool {
		c, b := readyz(admin)
		return c == http.StatusServiceUnavailable && strings.Contains(b, "kafka")
	})
	t.Logf("/readyz 503 %s after Kafka stopped", time.Since(stopped).Round(100*time.Millisecond))
	k = startKafka()
	testkit.Eventually(t, 60*time.Second, "200 after Kafka returned", func() bool { c, _ := readyz(admin); return c == http.StatusOK })

	// A stuck partition: the pusher's writes fail (push_queue is not a list)
	// and its batch is retried; after admin.stuck_after /readyz names it.
	must(t, rc.Set(ctx, "push_queue", "not a list", 0).Err())
	send("while-stuck")
	testkit.Eventually(t, 60*time.Second, "503 naming the stuck partition", func() bool {
		c, b := readyz(admin)
		return c == http.StatusServiceUnavailable && strings.Contains(b, "stuck partition") && strings.Contains(b, "pusher imr.push/")
	})
	must(t, rc.Del(ctx, "push_queue").Err())
	testkit.Eventually(t, 60*time.Second, "200 once the partition moves", func() bool { c, _ := readyz(admin); return c == http.StatusOK })
	testkit.Eventually(t, 30*time.Second, "the stuck push written", func() bool {
		return strings.Contains(strings.Join(rc.LRange(ctx, "push_queue", 0, -1).Val(), ""), "while-stuck")
	})
}
