package pusher_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"

	"github.com/imstream/imstream/internal/plumbing/config"
	"github.com/imstream/imstream/internal/tools/embedded"
	"github.com/imstream/imstream/internal/tools/testkit"
	"github.com/imstream/imstream/pusher"
	"github.com/imstream/imstream/schemas"
)

// peerJobs returns n push jobs for cmd IM, each with a unique content, keyed
// by receiver so they spread over partitions.
func peerJobs(topic string, from, n int) []kafka.Message {
	msgs := make([]kafka.Message, n)
	for i := range msgs {
		id := from + i
		recv := int64(1 + id%997)
		msgs[i] = kafka.Message{Topic: topic, Key: []byte("7:" + strconv.FormatInt(recv, 10)),
			Value: job(7, []int64{recv}, schemas.Message{Cmd: 4, Sender: 1, Receiver: recv, Content: "m-" + strconv.Itoa(id)})}
	}
	return msgs
}

// checkExactlyOnce asserts that push_queue holds m-0..m-(n-1) exactly once
// each, and that each receiver's entries are in production order.
func checkExactlyOnce(t *testing.T, rc redis.Cmdable, n int) {
	t.Helper()
	entries := rc.LRange(context.Background(), "push_queue", 0, -1).Val()
	seen := make(map[int]int, n)
	lastByRecv := map[string]int{}
	for _, e := range entries {
		i := strings.Index(e, `"content":"m-`)
		j := strings.Index(e[i+13:], `"`)
		id, err := strconv.Atoi(e[i+13 : i+13+j])
		if err != nil {
			t.Fatalf("bad entry %s", e)
		}
		seen[id]++
		recv := e[strings.Index(e, `"receiver":`):]
		if last, ok := lastByRecv[recv]; ok && id < last {
			t.Errorf("order violated for %s: m-%d after m-%d", recv, id, last)
		}
		lastByRecv[recv] = id
	}
	var missing, doubled []int
	for id := 0; id < n; id++ {
		switch seen[id] {
		case 0:
			missing = append(missing, id)
		case 1:
		default:
			doubled = append(doubled, id)
		}
	}
	sort.Ints(missing)
	if len(missing) > 0 || len(doubled) > 0 || len(entries) != n {
		t.Fatalf("entries=%d want %d; missing=%d (first %v) doubled=%d (first %v)",
			len(entries), n, len(missing), head(missing), len(doubled), head(doubled))
	}
}

func head(s []int) []int { return s[:min(len(s), 10)] }

func roleArgs(cfg config.Config) []string {
	return []string{
		"--kafka.brokers", cfg.Kafka.Brokers[0], "--redis.addrs", cfg.Redis.Addrs[0],
		"--kafka.partitions", strconv.Itoa(cfg.Kafka.Partitions),
		"--consumer.session_timeout", "6s", "--consumer.heartbeat_interval", "500ms", "--consumer.rebalance_timeout", "6s",
		"--admin.listen", "127.0.0.1:0", "--log.level", "info",
	}
}

// TestPusherSIGKILL kills a real pusher process three times while it is
// writing, restarts it, and finds every entry exactly once, in order per
// receiver.
func TestPusherSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("integration")
	}
	bin := testkit.Binary(t, "..")
	k := testkit.Kafka(t, embedded.KafkaOptions{})
	r := testkit.Redis(t, embedded.RedisOptions{})
	cfg := testkit.Config(k.Addr, r.Addr)
	cfg.Pusher.BatchSize = 200 // many batches, so kills land mid-flow
	rc := testkit.RedisClient(t, r.Addr)
	const n = 60000
	testkit.Produce(t, cfg, peerJobs(cfg.Kafka.Topics.Push, 0, n)...)

	args := append(roleArgs(cfg), "--pusher.batch_size", "200")
	p := testkit.Start(t, bin, append([]string{"pusher"}, args...)...)
	for kill, at := range []int64{5000, 20000, 40000} {
		testkit.Eventually(t, 60*time.Second, fmt.Sprintf("%d entries before kill %d", at, kill+1), func() bool {
			return rc.LLen(context.Background(), "push_queue").Val() >= at
		})
		p.Kill()
		t.Logf("kill %d: SIGKILL at %d entries", kill+1, rc.LLen(context.Background(), "push_queue").Val())
		p = testkit.Start(t, bin, append([]string{"pusher"}, args...)...)
	}
	testkit.Eventually(t, 90*time.Second, "all entries", func() bool {
		return rc.LLen(context.Background(), "push_queue").Val() >= n
	})
	// A late double would be in before the pusher commits past every job.
	testkit.WaitCaughtUp(t, cfg, cfg.Pusher.Group, cfg.Kafka.Topics.Push, 60*time.Second)
	checkExactlyOnce(t, rc, n)
}

// TestPusherRedisOutage stops redis-server for a few seconds while jobs keep
// arriving, restarts it, and finds nothing lost and nothing doubled.
func TestPusherRedisOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("integration")
	}
	k := testkit.Kafka(t, embedded.KafkaOptions{})
	r := testkit.Redis(t, embedded.RedisOptions{Persist: true})
	cfg := testkit.Config(k.Addr, r.Addr)
	cfg.Redis.ReadTimeout, cfg.Redis.WriteTimeout, cfg.Redis.DialTimeout = time.Second, time.Second, 500*time.Millisecond
	rc := testkit.RedisClient(t, r.Addr)
	stop := startPusher(t, cfg)
	defer stop()

	const n, chunk = 30000, 1000
	produced := make(chan error, 1)
	go func() {
		for i := 0; i < n; i += chunk {
			testkit.Produce(t, cfg, peerJobs(cfg.Kafka.Topics.Push, i, chunk)...)
			time.Sleep(20 * time.Millisecond)
		}
		produced <- nil
	}()
	testkit.Eventually(t, 60*time.Second, "load flowing", func() bool {
		return rc.LLen(context.Background(), "push_queue").Val() >= 3000
	})
	if err := r.Stop(); err != nil {
		t.Fatal(err)
	}
	t.Log("redis stopped under load")
	time.Sleep(4 * time.Second)
	if err := r.Start(); err != nil {
		t.Fatal(err)
	}
	t.Log("redis restarted")
	<-produced
	testkit.Eventually(t, 60*time.Second, "all entries after the outage", func() bool {
		return rc.LLen(context.Background(), "push_queue").Val() >= n
	})
	time.Sleep(time.Second)
	checkExactlyOnce(t, rc, n)
}

// TestDeadLetter: malformed records go to imr.dlq with a reason header and
// the partition keeps flowing.
func TestDeadLetter(t *testing.T) {
	k := testkit.Kafka(t, embedded.KafkaOptions{})
	r := testkit.Redis(t, embedded.RedisOptions{})
	cfg := testkit.Config(k.Addr, r.Addr)
	cfg.Kafka.Partitions = 1
	stop := startPusher(t, cfg)
	defer stop()
	topic := cfg.Kafka.Topics.Push
	bad := []struct{ value, reason string }{
		{`{"v":1,"type":"push_job",`, "invalid_json: record: invalid JSON"},
		{`{"v":1,"type":"push_job","server":"im-1","appid":"7","receivers":[1],"msg":{"cmd":4,"sender":1,"receiver":1}}`, "wrong_type: push_job.appid: want integer, got string"},
		{`{"v":1,"type":"push_job","server":"im-1","appid":7,"receivers":[1],"msg":{"cmd":99,"sender":1,"receiver":1}}`, "invalid_value: push_job.msg.cmd: unknown cmd 99"},
		{`{"v":1,"type":"push_job","server":"im-1","appid":7,"receivers":[1],"msg":{"cmd":4,"sender":1,"receiver":1,"content":"` + strings.Repeat("x", 70000) + `"}}`, "oversize: record: 70"},
		{`{"v":1,"type":"heartbeat","server":"im-1","appid":7,"epoch":1}`, "wrong_topic: heartbeat.type"},
	}
	var msgs []kafka.Message
	msgs = append(msgs, peerJobs(topic, 0, 1)...)
	for _, b := range bad {
		msgs = append(msgs, kafka.Message{Topic: topic, Key: []byte("7:1"), Value: []byte(b.value)})
	}
	msgs = append(msgs, peerJobs(topic, 1, 1)...)
	testkit.Produce(t, cfg, msgs...)

	rc := testkit.RedisClient(t, r.Addr)
	testkit.Eventually(t, 30*time.Second, "valid records after the bad ones", func() bool {
		return rc.LLen(context.Background(), "push_queue").Val() == 2
	})
	rd := kafka.NewReader(kafka.ReaderConfig{Brokers: cfg.Kafka.Brokers, Topic: cfg.Kafka.Topics.DLQ, Partition: 0, MaxWait: 100 * time.Millisecond})
	defer rd.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i, b := range bad {
		m, err := rd.ReadMessage(ctx)
		if err != nil {
			t.Fatalf("dead letter %d: %v", i, err)
		}
		h := map[string]string{}
		for _, x := range m.Headers {
			h[x.Key] = string(x.Value)
		}
		if !strings.HasPrefix(h["reason"], b.reason) {
			t.Errorf("dead letter %d reason = %q, want prefix %q", i, h["reason"], b.reason)
		}
		if h["stage"] != "pusher" || h["src_topic"] != topic || h["src_offset"] != strconv.Itoa(i+1) || string(m.Value) != b.value || string(m.Key) != "7:1" {
			t.Errorf("dead letter %d: headers %v key %s", i, h, m.Key)
		}
	}
}

// TestRedisSinkExactlyOnce: the Redis sink follows the Sink contract.
func TestRedisSinkExactlyOnce(t *testing.T) {
	r := testkit.Redis(t, embedded.RedisOptions{})
	sinkContract(t, testkit.RedisClient(t, r.Addr))
}

// TestClusterSinkExactlyOnce: the same on a 3-master Redis Cluster.
func TestClusterSinkExactlyOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("integration")
	}
	c := testkit.StartRedisCluster(t, 3)
	sinkContract(t, c.Client(t))
}

func sinkContract(t *testing.T, rc redis.UniversalClient) {
	s := &pusher.RedisSink{Client: rc, Prefix: "imstream:"}
	ctx := context.Background()
	batch := func(from, to int64) []pusher.Entry {
		var es []pusher.Entry
		for o := from; o <= to; o++ {
			es = append(es, pusher.Entry{List: "a", SrcTopic: "t", Pos: o, Data: []byte(fmt.Sprint(o))})
			es = append(es, pusher.Entry{List: "b", SrcTopic: "t", Pos: o, Data: []byte(fmt.Sprint(o))})
		}
		return es
	}
	for _, b := range [][2]int64{{0, 4}, {0, 4}, {3, 7}, {8, 9}, {5, 9}, {0, 2999}} {
		if err := s.Append(ctx, batch(b[0], b[1])); err != nil {
			t.Fatal(err)
		}
	}
	// Replays inside one call: jobs 3000..3004, then the same jobs
	// re-produced at new imr.push offsets (Job) with 3005..3006; then two
	// fanout instances interleaving during a rebalance.
	job := func(from, to, jobBase int64) []pusher.Entry {
		es := batch(from, to)
		for i := range es {
			es[i].Job = jobBase + es[i].Pos
		}
		return es
	}
	in := append(job(3000, 3004, 0), job(3000, 3006, 10_000)...)
	if err := s.Append(ctx, in); err != nil {
		t.Fatal(err)
	}
	in = append(append(job(3007, 3010, 0), job(3008, 3012, 10_000)...), job(3011, 3014, 20_000)...)
	if err := s.Append(ctx, in); err != nil {
		t.Fatal(err)
	}
	for _, l := range []string{"a", "b"} {
		got := rc.LRange(ctx, l, 0, -1).Val()
		if len(got) != 3015 {
			t.Fatalf("%s: %d entries, want 3015", l, len(got))
		}
		for i, v := range got {
			if v != fmt.Sprint(i) {
				t.Fatalf("%s[%d] = %s", l, i, v)
			}
		}
	}
	if wm := rc.Get(ctx, s.WatermarkKey("a", "t", 0, 0)).Val(); wm != "3014" {
		t.Fatalf("watermark = %q", wm)
	}
}

// TestPusherFanoutReplay: a fanout that crashed after producing and
// re-produced its jobs (same src, new imr.push offsets) doubles nothing,
// when one event's jobs straddle two batches (batch size 7) and when the
// replay lands in the same batch as the original (batch size 1000).
func TestPusherFanoutReplay(t *testing.T) {
	for _, size := range []int{7, 1000} {
		t.Run(fmt.Sprint("batch_size=", size), func(t *testing.T) { fanoutReplay(t, size) })
	}
}

func fanoutReplay(t *testing.T, batchSize int) {
	k := testkit.Kafka(t, embedded.KafkaOptions{})
	r := testkit.Redis(t, embedded.RedisOptions{})
	cfg := testkit.Config(k.Addr, r.Addr)
	cfg.Pusher.BatchSize = batchSize
	topic := cfg.Kafka.Topics.Push
	jobs := func(from, to int64) []kafka.Message {
		var ms []kafka.Message
		for off := from; off < to; off++ {
			for idx := 0; idx < 3; idx++ {
				recv := 1000 + int64(idx)
				b, _ := json.Marshal(&schemas.PushJob{
					Header:    schemas.Header{V: 1, Type: schemas.TypePushJob, Server: "im-1", AppID: 7},
					Receivers: []int64{recv},
					Msg:       schemas.Message{Cmd: 4, Sender: 1, Receiver: recv, Content: fmt.Sprintf("m-%d", off*3+int64(idx))},
					Src:       &schemas.Source{Topic: "imr.publish", Partition: 2, Offset: off, Index: idx},
				})
				ms = append(ms, kafka.Message{Topic: topic, Key: []byte("imr.publish:2"), Value: b})
			}
		}
		return ms
	}
	msgs := append(jobs(0, 100), jobs(40, 100)...) // the replay
	msgs = append(msgs, jobs(100, 120)...)
	testkit.Produce(t, cfg, msgs...)
	stop := startPusher(t, cfg)
	defer stop()
	rc := testkit.RedisClient(t, r.Addr)
	testkit.Eventually(t, 30*time.Second, "entries", func() bool {
		return rc.LLen(context.Background(), "push_queue").Val() >= 360
	})
	time.Sleep(500 * time.Millisecond)
	checkExactlyOnce(t, rc, 360)
}

// TestPusherClusterFailover: a pusher on a 3-master Redis Cluster keeps
// writing while the master holding push_queue fails over to its replica
// (MOVED redirections); every entry ends up in the list exactly once.
func TestPusherClusterFailover(t *testing.T) {
	clusterFault(t, 0, func(c *testkit.RedisCluster) string { return c.FailoverSlotOf(t, "push_queue") })
}

// TestPusherClusterMasterKilled SIGKILLs the master of push_queue's slot
// under load — no handover, so whatever it acknowledged and had not yet
// replicated dies with it — with redis.wait_replicas 1: the pusher commits
// only what a replica acknowledged too, so after the automatic failover
// every entry is there exactly once.
func TestPusherClusterMasterKilled(t *testing.T) {
	clusterFault(t, 1, func(c *testkit.RedisCluster) string { return c.KillMasterOf(t, "push_queue") })
}

// clusterFault runs a pusher (with waitReplicas) on a 3-master Redis
// Cluster, writes 30 000 entries, strikes push_queue's master with fault
// (which returns the new master) under load, and checks every entry exactly
// once.
func clusterFault(t *testing.T, waitReplicas int, fault func(*testkit.RedisCluster) string) {
	if testing.Short() {
		t.Skip("integration")
	}
	k := testkit.Kafka(t, embedded.KafkaOptions{})
	c := testkit.StartRedisCluster(t, 3)
	cfg := testkit.Config(k.Addr, c.Addrs[0])
	cfg.Redis.Cluster = true
	cfg.Redis.Addrs = c.Addrs
	cfg.Redis.WaitReplicas = waitReplicas
	cfg.Redis.WaitTimeout = 500 * time.Millisecond
	rc := c.Client(t)
	stop := startPusher(t, cfg)
	defer stop()

	const n, chunk = 30000, 1000
	produced := make(chan struct{})
	go func() {
		defer close(produced)
		for i := 0; i < n; i += chunk {
			testkit.Produce(t, cfg, peerJobs(cfg.Kafka.Topics.Push, i, chunk)...)
			time.Sleep(30 * time.Millisecond)
		}
	}()
	testkit.Eventually(t, 60*time.Second, "load flowing", func() bool {
		return rc.LLen(context.Background(), "push_queue").Val() >= 5000
	})
	newMaster := fault(c)
	t.Logf("push_queue's slot moved to %s at %d entries", newMaster, rc.LLen(context.Background(), "push_queue").Val())
	<-produced
	testkit.Eventually(t, 90*time.Second, "all entries after the failover", func() bool {
		return rc.LLen(context.Background(), "push_queue").Val() >= n
	})
	time.Sleep(time.Second)
	checkExactlyOnce(t, rc, n)
}

// TestRedisSinkPerApp: watermarks are per app. Fair share holds an app back
// and routes it after later records of other apps of the same source
// partition; the other apps' entries must not make the held app's look
// like repeats, and a replay of either is still dropped. A stream's first
// append starts from the watermark releases before per-app watermarks
// wrote for the list and source partition, so that nothing written before
// an upgrade is appended again.
func TestRedisSinkPerApp(t *testing.T) {
	r := testkit.Redis(t, embedded.RedisOptions{})
	rc := testkit.RedisClient(t, r.Addr)
	s := &pusher.RedisSink{Client: rc, Prefix: "imstream:"}
	ctx := context.Background()
	entry := func(app, off int64) pusher.Entry {
		return pusher.Entry{List: "push_queue", SrcTopic: "imr.publish@f1", SrcPartition: 0, App: app, Pos: off << 16, Job: off, Data: fmt.Appendf(nil, "%d/%d", app, off)}
	}
	// App 7's records at 10..12 routed at once; app 9's at 5..9, held,
	// drained after them; then both again (replays).
	for _, batch := range [][]pusher.Entry{
		{entry(7, 10), entry(7, 11), entry(7, 12)},
		{entry(9, 5), entry(9, 6), entry(9, 7), entry(9, 8), entry(9, 9)},
		{entry(9, 8), entry(7, 12), entry(9, 9)},
	} {
		if err := s.Append(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	want := "[7/10 7/11 7/12 9/5 9/6 9/7 9/8 9/9]"
	if got := fmt.Sprint(rc.LRange(ctx, "push_queue", 0, -1).Val()); got != want {
		t.Fatalf("push_queue %s, want %s", got, want)
	}

	// A list and partition an older release wrote up to offset 20, for all
	// apps: a replay of what it wrote appends nothing, what follows does.
	if err := rc.Set(ctx, s.LegacyWatermarkKey("group_push_queue", "imr.publish@f1", 0), int64(20)<<16, 0).Err(); err != nil {
		t.Fatal(err)
	}
	g := func(app, off int64) pusher.Entry {
		e := entry(app, off)
		e.List = "group_push_queue"
		return e
	}
	if err := s.Append(ctx, []pusher.Entry{g(7, 19), g(7, 20), g(7, 21), g(9, 18), g(9, 22)}); err != nil {
		t.Fatal(err)
	}
	if got, want := fmt.Sprint(rc.LRange(ctx, "group_push_queue", 0, -1).Val()), "[7/21 9/22]"; got != want {
		t.Fatalf("group_push_queue %s, want %s", got, want)
	}
}
