//go:build chaos

package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/imstream/imstream/ingest"
	"github.com/imstream/imstream/internal/plumbing/config"
	"github.com/imstream/imstream/internal/plumbing/kafkax"
	"github.com/imstream/imstream/internal/tools/embedded"
	"github.com/imstream/imstream/internal/tools/testkit"
	"github.com/imstream/imstream/schemas"
)

// Redis at its memory limit, with used memory crossing it back and forth:
// some calls of a pipeline refused, the next accepted (docs/reliability.md).

func init() {
	faults = append(faults,
		fault{"Redis at its memory limit, used memory crossing it back and forth", func(c *chaos) time.Duration {
			return c.memoryLimit(0)
		}},
		fault{"Redis at its memory limit, crossing it, beside two busy loops", func(c *chaos) time.Duration {
			return c.memoryLimit(2)
		}},
	)
}

// memoryLimit holds Redis at a memory limit a little above what it uses
// (noeviction) for CHAOS_MEMLIMIT_SECONDS (default 15), while a ballast of
// 256 KiB values grows until Redis refuses it and shrinks again at random,
// so that used memory crosses the limit many times a second; busy CPU
// loops run beside it. Then the limit is lifted and the ballast deleted.
func (c *chaos) memoryLimit(busy int) time.Duration {
	ctx := context.Background()
	stopBusy := busyLoops(c.t, busy)
	defer stopBusy()
	must(c.t, c.rc.ConfigSet(ctx, "maxmemory-policy", "noeviction").Err())
	must(c.t, c.rc.ConfigSet(ctx, "maxmemory", strconv.FormatInt(testkit.UsedMemory(c.t, c.rc)+8<<20, 10)).Err())
	refusals, crossings := crossLimit(c.t, c.rc, time.Duration(envInt("CHAOS_MEMLIMIT_SECONDS", 15))*time.Second)
	must(c.t, c.rc.ConfigSet(ctx, "maxmemory", "0").Err())
	c.t.Logf("memory limit: %d ballast writes refused, the limit crossed %d times", refusals, crossings)
	if refusals == 0 {
		c.t.Error("Redis never refused a write: the limit was not reached")
	}
	return c.progress(time.Now())
}

// crossLimit grows a ballast until Redis refuses it (OOM) and deletes a
// random part of it again, for d; it returns the writes refused and the
// times the ballast went from refused to accepted. The ballast is deleted
// at the end.
func crossLimit(t *testing.T, rc *redis.Client, d time.Duration) (refusals, crossings int) {
	ctx := context.Background()
	value := strings.Repeat("b", 256<<10)
	var keys []string
	defer func() {
		if len(keys) > 0 {
			must(t, rc.Del(ctx, keys...).Err())
		}
	}()
	refused := false
	for end := time.Now().Add(d); time.Now().Before(end); {
		key := "imstream-chaos-ballast:" + strconv.Itoa(rand.Int())
		err := rc.Set(ctx, key, value, 0).Err()
		switch {
		case err == nil:
			keys = append(keys, key)
			if refused {
				crossings++
			}
			refused = false
			continue
		case !strings.Contains(err.Error(), "OOM"):
			t.Fatalf("ballast: %v", err)
		}
		refusals++
		refused = true
		// Over the limit: stay there a moment, then free part of the ballast.
		time.Sleep(time.Duration(rand.IntN(40)) * time.Millisecond)
		if n := rand.IntN(len(keys) + 1); n > 0 {
			must(t, rc.Del(ctx, keys[:n]...).Err())
			keys = keys[n:]
		}
	}
	return refusals, crossings
}

// busyLoops starts n shell processes that spin on a core each, and returns
// what stops them.
func busyLoops(t testing.TB, n int) func() {
	var cmds []*exec.Cmd
	for range n {
		cmd := exec.Command("sh", "-c", "while :; do :; done")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, cmd)
	}
	return func() {
		for _, cmd := range cmds {
			_ = cmd.Process.Signal(syscall.SIGKILL)
			_ = cmd.Wait()
		}
		cmds = nil
	}
}

// TestPushAtMemoryLimit is the operator's scenario of a Redis that fills
// up under the pusher: `imstream all` on a 12-partition broker, MEMLIMIT_EVENTS
// (default 200 000) persistent messages of ~200 bytes to 500 receivers who
// are never online, Redis's maxmemory (noeviction) a little above what it
// holds, so that the push lists fill it while they flow; held there for
// MEMLIMIT_HOLD (default 60s), then lifted. Every entry is in
// push_queue exactly once, in each receiver's order, and nothing was
// dead-lettered; the log says how long after the limit was lifted the last
// entry arrived (the promise: within 30 s). MEMLIMIT_RUNS runs (default 1), MEMLIMIT_BUSY busy loops
// beside them (default 0). Not part of `make chaos`: run it with
//
//	go test -tags chaos -run TestPushAtMemoryLimit -v ./e2e
func TestPushAtMemoryLimit(t *testing.T) {
	hold := 60 * time.Second
	if d, err := time.ParseDuration(os.Getenv("MEMLIMIT_HOLD")); err == nil {
		hold = d
	}
	for run := range envInt("MEMLIMIT_RUNS", 1) {
		t.Run(fmt.Sprint("run_", run+1), func(t *testing.T) {
			pushAtMemoryLimit(t, envInt("MEMLIMIT_EVENTS", 200_000), hold, envInt("MEMLIMIT_BUSY", 0))
		})
	}
}

func pushAtMemoryLimit(t *testing.T, n int, hold time.Duration, busy int) {
	stopBusy := busyLoops(t, busy)
	defer stopBusy()
	k := testkit.Kafka(t, embedded.KafkaOptions{Partitions: 12})
	r := testkit.Redis(t, embedded.RedisOptions{})
	cfg := testkit.Config(k.Addr, r.Addr)
	cfg.Kafka.Partitions = 12
	rc := testkit.RedisClient(t, r.Addr)
	ctx := context.Background()
	bin := testkit.Binary(t, "..")
	testkit.StartOnFreePort(t, bin, func(addr string) []string {
		return []string{"all", "--kafka.brokers", k.Addr, "--redis.addrs", r.Addr, "--kafka.partitions", "12",
			"--consumer.session_timeout", "6s", "--consumer.heartbeat_interval", "500ms", "--consumer.rebalance_timeout", "6s",
			"--admin.listen", addr}
	})
	// Room for about a third of the entries.
	must(t, rc.ConfigSet(ctx, "maxmemory-policy", "noeviction").Err())
	must(t, rc.ConfigSet(ctx, "maxmemory", strconv.FormatInt(testkit.UsedMemory(t, rc)+int64(n)*100, 10)).Err())

	enc := ingest.NewEncoder("im-1", 1, ingest.Topics{Presence: cfg.Kafka.Topics.Presence, Publish: cfg.Kafka.Topics.Publish, Bulk: cfg.Kafka.Topics.Bulk})
	pad := strings.Repeat("p", 190)
	produced := make(chan struct{})
	go func() {
		defer close(produced)
		testkit.ProduceMany(t, cfg, n, func(i int) kafkaMessage {
			to := int64(1_000_000 + i%500)
			msg := schemas.Message{Cmd: schemas.CmdIM, Sender: 1, Receiver: to, Content: fmt.Sprintf("%s-%d", pad, i)}
			return enc.Publish(app, to, msg, ingest.Meta{}).Message()
		})
	}()
	testkit.Eventually(t, 5*time.Minute, "Redis at its memory limit", func() bool {
		err := rc.Set(ctx, "imstream-probe", "x", 0).Err()
		return err != nil && strings.Contains(err.Error(), "OOM")
	})
	at := rc.LLen(ctx, "push_queue").Val()
	time.Sleep(hold)
	t.Logf("held at the limit for %s from %d entries (%d now)", hold, at, rc.LLen(ctx, "push_queue").Val())
	must(t, rc.ConfigSet(ctx, "maxmemory", "0").Err())
	recovered := time.Now()
	<-produced
	// Every entry, or nothing more to come: the roles caught up with
	// everything (what an operator sees when entries are lost).
	conn := kafkaxConn(cfg)
	testkit.Eventually(t, 5*time.Minute, "every entry, or the roles caught up", func() bool {
		return rc.LLen(ctx, "push_queue").Val() >= int64(n) || caughtUp(conn, cfg)
	})
	took := time.Since(recovered)
	testkit.WaitCaughtUp(t, cfg, cfg.Fanout.Group, cfg.Kafka.Topics.Publish, time.Minute)
	testkit.WaitCaughtUp(t, cfg, cfg.Pusher.Group, cfg.Kafka.Topics.Push, time.Minute)

	seen := make([]int, n)
	last := map[int64]int{}
	for _, e := range rc.LRange(ctx, "push_queue", 0, -1).Val() {
		var v struct {
			Receiver int64  `json:"receiver"`
			Content  string `json:"content"`
		}
		must(t, json.Unmarshal([]byte(e), &v))
		i, err := strconv.Atoi(v.Content[strings.LastIndexByte(v.Content, '-')+1:])
		if err != nil || i >= n {
			t.Fatalf("entry %.80s", e)
		}
		seen[i]++
		if l, ok := last[v.Receiver]; ok && i < l {
			t.Errorf("receiver %d: message %d after %d", v.Receiver, i, l)
		}
		last[v.Receiver] = i
	}
	missing, doubled := 0, 0
	for _, c := range seen {
		missing += b2i(c == 0)
		doubled += max(c-1, 0)
	}
	dead := len(testkit.ReadAll(t, cfg, cfg.Kafka.Topics.DLQ))
	t.Logf("%d entries: %d missing, %d doubled, %d dead-lettered; the roles done %s after Redis recovered",
		n, missing, doubled, dead, took.Round(100*time.Millisecond))
	if missing+doubled+dead > 0 {
		t.Fatal("not every entry exactly once")
	}
}

// caughtUp reports whether the fanout and the pusher have no lag.
func caughtUp(conn *kafkax.Conn, cfg config.Config) bool {
	for _, g := range [][2]string{{cfg.Fanout.Group, cfg.Kafka.Topics.Publish}, {cfg.Pusher.Group, cfg.Kafka.Topics.Push}} {
		lag, err := conn.Lag(context.Background(), g[0], g[1])
		if err != nil || len(lag) == 0 {
			return false
		}
		for _, l := range lag {
			if l > 0 {
				return false
			}
		}
	}
	return true
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
