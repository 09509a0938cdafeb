// Package testkit starts what integration tests need, for real: a kfake
// broker over TCP and a redis-server child on a free port. Tests never rely
// on a service that happens to run on the machine.
package testkit

import (
	"context"
	"errors"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"

	"github.com/imstream/imstream/internal/plumbing/config"
	"github.com/imstream/imstream/internal/plumbing/kafkax"
	"github.com/imstream/imstream/internal/tools/embedded"
)

// Redis starts a redis-server child for the test; it fails the test with
// install instructions when redis-server is missing (`make test` installs it).
func Redis(t testing.TB, o embedded.RedisOptions) *embedded.Redis {
	t.Helper()
	if o.Dir == "" {
		o.Dir = t.TempDir()
	}
	r, err := embedded.StartRedis(o)
	if errors.Is(err, embedded.ErrNoRedisServer) {
		t.Fatalf("%v — run `make test`, which installs it", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Kill() })
	return r
}

// Kafka starts an embedded broker for the test.
func Kafka(t testing.TB, o embedded.KafkaOptions) *embedded.Kafka {
	t.Helper()
	k, err := embedded.StartKafka(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	return k
}

// Config returns a configuration pointing at the given broker and Redis,
// with timeouts short enough for tests.
func Config(kafkaAddr, redisAddr string) config.Config {
	cfg := config.Default()
	cfg.Kafka.Brokers = []string{kafkaAddr}
	cfg.Kafka.Partitions = 4
	cfg.Redis.Addrs = []string{redisAddr}
	cfg.Consumer.SessionTimeout = 6 * time.Second
	cfg.Consumer.HeartbeatInterval = 500 * time.Millisecond
	cfg.Consumer.RebalanceTimeout = 6 * time.Second
	cfg.Consumer.RetryMax = time.Second
	cfg.Admin.Listen = ""
	return cfg
}

// RedisClient returns a client for addr closed at the end of the test.
func RedisClient(t testing.TB, addr string) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// UsedMemory is Redis's used_memory (INFO memory), in bytes.
func UsedMemory(t testing.TB, rc redis.Cmdable) int64 {
	t.Helper()
	info, err := rc.Info(context.Background(), "memory").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(l, "used_memory:"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				t.Fatalf("used_memory %q: %v", v, err)
			}
			return n
		}
	}
	t.Fatal("no used_memory in INFO memory")
	return 0
}

// Produce writes records (Topic set on each) and fails the test on error.
func Produce(t testing.TB, cfg config.Config, msgs ...kafka.Message) {
	t.Helper()
	conn := kafkax.MustConn(cfg.Kafka)
	w := conn.NewWriter(cfg.Kafka, "")
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	topics := map[string]int{}
	for _, m := range msgs {
		topics[m.Topic] = cfg.Kafka.Partitions
	}
	if err := conn.EnsureTopics(ctx, 1, topics); err != nil {
		t.Fatalf("produce: %v", err)
	}
	for len(msgs) > 0 {
		n := min(len(msgs), 5000)
		if err := kafkax.Write(ctx, w, msgs[:n]...); err != nil {
			t.Fatalf("produce: %v", err)
		}
		msgs = msgs[n:]
	}
}

// ProduceMany writes n records, the i-th made by rec(i), in chunks of
// 10 000 (without holding all of them), and fails the test on error.
func ProduceMany(t testing.TB, cfg config.Config, n int, rec func(i int) kafka.Message) {
	t.Helper()
	chunk := make([]kafka.Message, 0, 10_000)
	for i := 0; i < n; i++ {
		chunk = append(chunk, rec(i))
		if len(chunk) == cap(chunk) || i == n-1 {
			Produce(t, cfg, chunk...)
			chunk = chunk[:0]
		}
	}
}

// Eventually polls cond every 50ms until it returns true or d passes.
func Eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Binary builds ./cmd/imstream into a temp dir once per test binary and
// returns its path.
func Binary(t testing.TB, moduleRoot string) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := osMkdirTemp()
		if err != nil {
			binErr = err
			return
		}
		binPath = dir + "/imstream"
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/imstream")
		cmd.Dir = moduleRoot
		out, err := cmd.CombinedOutput()
		if err != nil {
			binErr = errors.New("go build: " + err.Error() + ": " + string(out))
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// ReleaseBinary builds imstream as it was at commit rev of the repository
// at moduleRoot (git archive, then go build: the repository is left as it
// is), for tests of upgrade mistakes against a real older release. A
// checkout without that history (a source archive, a shallow clone) skips
// the test, saying so.
func ReleaseBinary(t testing.TB, moduleRoot, rev string) string {
	t.Helper()
	if out, err := exec.Command("git", "-C", moduleRoot, "cat-file", "-e", rev+"^{commit}").CombinedOutput(); err != nil {
		t.Skipf("SKIPPED: commit %s is not in this checkout (a shallow clone or a source archive): %v %s", rev, err, out)
	}
	dir := t.TempDir()
	archive := exec.Command("sh", "-c", `git -C "$1" archive "$2" | tar -x -C "$3"`, "sh", moduleRoot, rev, dir)
	if out, err := archive.CombinedOutput(); err != nil {
		t.Fatalf("git archive %s: %v\n%s", rev, err, out)
	}
	build := exec.Command("go", "build", "-o", dir+"/imstream", "./cmd/imstream")
	build.Dir = dir
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build at %s: %v\n%s", rev, err, out)
	}
	return dir + "/imstream"
}
