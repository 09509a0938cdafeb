//go:build chaos

package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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

// The chaos suite (`make chaos`; CHAOS_EVENTS events per fault, default
// 200000): the real binary's roles as processes, kfake persisted to a data
// dir, redis-server behind a latency proxy, a known workload, one fault per
// run (and a mixed run), and an exact check of every push list and deliver
// topic against what the workload implies.

type chaos struct {
	t      *testing.T
	s      *stack
	kafka  *embedded.Kafka
	kports []int // one per broker
	kdir   string
	redis  *embedded.Redis
	proxy  *testkit.Proxy
	rc     *redis.Client
	ims    []*ingest.Producer // s1, s2, s3: stable servers
	dead   *ingest.Producer   // s4: stops heartbeating in one fault
	sent   atomic.Int64
	run    string       // the run in progress
	want   *expectation // what it must produce (faults that send add to it)
	// archived holds deliver records of logs deleted by a fault, per server.
	archived map[string][]kafkaMessage
	// redriven are the dead letters produced back (src topic/partition/offset).
	redriven map[string]bool
	floods   int // floods of the fair-share faults so far
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

const (
	chaosGroup = 1          // members are offline users; the sender is not one
	offBase    = 10_000_000 // offline receivers
	roomID     = 7          // subscribed on s2 and s3
)

func newChaos(t *testing.T) *chaos {
	c := &chaos{t: t, kdir: t.TempDir(), archived: map[string][]kafkaMessage{}, redriven: map[string]bool{}}
	for i := 0; i < 3; i++ {
		port, err := embedded.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		c.kports = append(c.kports, port)
	}
	c.startKafka()
	t.Cleanup(func() { c.kafka.Close() })
	c.redis = testkit.Redis(t, embedded.RedisOptions{Persist: true})
	c.proxy = testkit.StartProxy(t, c.redis.Addr)
	c.rc = testkit.RedisClient(t, c.redis.Addr)
	cfg := testkit.Config(c.kafka.Addr, c.proxy.Addr)
	cfg.Kafka.Brokers = c.kafka.Addrs
	// The production lease: an outage shorter than a lease must not make
	// servers look dead (a longer one does, by design).
	cfg.Presence.Lease = 30 * time.Second
	c.s = &stack{t: t, bin: testkit.Binary(t, ".."), cfg: cfg, extra: append([]string{"--presence.lease", "30s"}, fairShareArgs(envInt("CHAOS_EVENTS", 200000))...)}
	a, _ := c.s.start("presence")
	c.s.admins = []string{a}
	a, _ = c.s.start("fanout")
	c.s.fanout = []string{a}
	c.s.pusher, _ = c.s.start("pusher")
	for i := 1; i <= 4; i++ {
		p := imServer(t, cfg, "s"+strconv.Itoa(i), 1)
		if i == 4 {
			c.dead = p
		} else {
			c.ims = append(c.ims, p)
		}
	}
	ctx := context.Background()
	members := make([]int64, 20)
	for i := range members {
		members[i] = offBase + 1 + int64(i)
	}
	b, _ := json.Marshal(&schemas.Group{Header: schemas.Header{V: 1, Type: schemas.TypeGroupCreate, Server: "backend", AppID: app}, GroupID: chaosGroup, Members: members})
	testkit.Produce(t, cfg, kafkaMessage{Topic: cfg.Kafka.Topics.Groups, Key: []byte("7:1"), Value: b})
	for i, p := range append(c.ims, c.dead) {
		for u := 1; u <= 50; u++ {
			must(t, p.Subscribe(ctx, app, int64(i*100+u), true))
		}
	}
	must(t, c.ims[1].SubscribeRoom(ctx, app, roomID))
	must(t, c.ims[2].SubscribeRoom(ctx, app, roomID))
	testkit.Eventually(t, 60*time.Second, "presence of every server", func() bool {
		for _, u := range []int64{50, 150, 250, 350} {
			if on, _ := c.s.online(t, u); !on {
				return false
			}
		}
		return true
	})
	return c
}

func (c *chaos) startKafka() {
	k, err := embedded.StartKafka(embedded.KafkaOptions{Ports: c.kports, DataDir: c.kdir, Partitions: 4})
	if err != nil {
		c.t.Fatal(err)
	}
	c.kafka = k
}

// send retries a produce until it is acknowledged (the broker may be down).
func send(f func() error) {
	for {
		gate.RLock()
		err := f()
		gate.RUnlock()
		if err == nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// expectation is what a run must produce.
type expectation struct {
	mu       sync.Mutex
	push     map[string]int64            // push_queue content → receiver
	group    map[string]bool             // group_push_queue contents
	delivers map[string]map[string]int64 // server → content → receiver
	// redriven are contents produced again from the dead-letter topic: they
	// arrive once, but after what was sent later (no order is promised).
	redriven map[string]bool
}

func (e *expectation) add(list map[string]int64, content string, recv int64) {
	e.mu.Lock()
	list[content] = recv
	e.mu.Unlock()
}

// workload sends n events from 32 workers; each receiver belongs to one
// worker, so per-receiver send order is the order of the event numbers.
func (c *chaos) workload(run string, n int, e *expectation) {
	ctx := context.Background()
	var wg sync.WaitGroup
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 32 {
				origin := i % 3
				p := c.ims[origin]
				content := run + "-" + strconv.Itoa(i)
				off := int64(offBase + 100 + w*10 + (i/32)%10)
				switch i % 10 {
				case 0, 1, 2, 3:
					e.add(e.push, content, off)
					send(func() error {
						return p.Push(ctx, app, []int64{off}, schemas.Message{Cmd: 4, Sender: 1, Receiver: off, Content: content})
					})
				case 4, 5:
					e.add(e.push, content, off)
					send(func() error {
						return p.Publish(ctx, app, off, schemas.Message{Cmd: 4, Sender: 1, Receiver: off, Content: content}, ingest.Meta{})
					})
				case 6:
					e.mu.Lock()
					e.group[content] = true
					e.mu.Unlock()
					send(func() error {
						return p.PublishGroup(ctx, app, chaosGroup, schemas.Message{Cmd: 8, Sender: 1, Receiver: chaosGroup, Content: content}, ingest.Meta{})
					})
				case 7, 8:
					target := (origin + 1) % 3
					to := int64(target*100 + 1 + w%50)
					e.add(e.delivers["s"+strconv.Itoa(target+1)], content, to)
					send(func() error {
						return p.Publish(ctx, app, to, schemas.Message{Cmd: 17, Sender: 1, Receiver: to, Content: content}, ingest.Meta{})
					})
				case 9:
					e.add(e.delivers["s2"], content, roomID)
					e.add(e.delivers["s3"], content, roomID)
					send(func() error {
						return c.ims[0].PublishRoom(ctx, app, roomID, schemas.Message{Cmd: 20, Sender: 1, Receiver: roomID, Content: content}, ingest.Meta{})
					})
				}
				c.sent.Add(1)
			}
		}()
	}
	wg.Wait()
}

// progress waits until the pipeline moves again after a fault — push_queue
// grows, or fanout and pusher have nothing left to do — and returns how
// long that took.
func (c *chaos) progress(since time.Time) time.Duration {
	ctx := context.Background()
	start := c.rc.LLen(ctx, "push_queue").Val()
	conn := kafkaxConn(c.s.cfg)
	idle := func() bool {
		for _, g := range [][2]string{{c.s.cfg.Fanout.Group, c.s.cfg.Kafka.Topics.Publish}, {c.s.cfg.Fanout.Group, c.s.cfg.Kafka.Topics.Bulk},
			{c.s.cfg.Pusher.Group, c.s.cfg.Kafka.Topics.Push}} {
			lag, err := conn.Lag(ctx, g[0], g[1])
			if err != nil {
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
	for time.Since(since) < 5*time.Minute {
		if c.rc.LLen(ctx, "push_queue").Val() > start || idle() {
			return time.Since(since)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(since)
}

func (c *chaos) restart(role string, sig syscall.Signal) {
	p := c.s.procs[role]
	if sig == syscall.SIGKILL {
		p.Kill()
	} else {
		p.Stop()
	}
	addr, _ := c.s.start(role)
	// Wait until the new process has joined its group before the next
	// fault: kfake (the embedded test broker) never expires a member killed
	// while its JoinGroup/SyncGroup reply is pending (its session timer is
	// armed only once a reply was delivered, kfake groups.go reply()), so a
	// kill in that window would strand partitions forever. A real broker
	// expires such a member after session.timeout.ms.
	testkit.Eventually(c.t, 60*time.Second, role+" ready", func() bool {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	switch role { // the new process has a new admin address
	case "presence":
		c.s.admins = []string{addr}
	case "fanout":
		c.s.fanout = []string{addr}
	case "pusher":
		c.s.pusher = addr
	}
}

type fault struct {
	name   string
	inject func(c *chaos) time.Duration // returns the recovery time
}

func killFault(role string, times int) fault {
	return fault{fmt.Sprintf("SIGKILL %s ×%d", role, times), func(c *chaos) time.Duration {
		for i := 0; i < times; i++ {
			time.Sleep(time.Duration(300+rand.IntN(1500)) * time.Millisecond)
			c.restart(role, syscall.SIGKILL)
		}
		return c.progress(time.Now())
	}}
}

var faults = []fault{
	killFault("fanout", 3),
	killFault("pusher", 3),
	killFault("presence", 2),
	{"SIGKILL fanout and pusher during a MSG_PUSH burst (bulk lane)", func(c *chaos) time.Duration {
		// A burst as large as the run, pushed by 8 goroutines on top of the
		// workload, each to offline users of its own; the fanout and the
		// pusher die while it flows.
		n := envInt("CHAOS_EVENTS", 200000)
		var wg sync.WaitGroup
		var sent atomic.Int64
		for w := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < n; i += 8 {
					content := c.run + "-burst-" + strconv.Itoa(i)
					to := int64(offBase + 900 + w*10 + (i/8)%10)
					c.want.add(c.want.push, content, to)
					send(func() error {
						return c.ims[w%3].Push(context.Background(), app, []int64{to}, schemas.Message{Cmd: 4, Sender: 1, Receiver: to, Content: content})
					})
					sent.Add(1)
				}
			}()
		}
		for sent.Load() < int64(n/4) {
			time.Sleep(10 * time.Millisecond)
		}
		c.restart("fanout", syscall.SIGKILL)
		time.Sleep(time.Duration(300+rand.IntN(1000)) * time.Millisecond)
		c.restart("pusher", syscall.SIGKILL)
		wg.Wait()
		c.sent.Add(sent.Load())
		return c.progress(time.Now())
	}},
	{"consumers added and removed (rebalance)", func(c *chaos) time.Duration {
		mainFanout, mainPusher := c.s.procs["fanout"], c.s.procs["pusher"]
		_, f := c.s.start("fanout")
		_, p := c.s.start("pusher")
		c.s.procs["fanout"], c.s.procs["pusher"] = mainFanout, mainPusher
		time.Sleep(4 * time.Second)
		f.Stop()
		p.Stop()
		return c.progress(time.Now())
	}},
	{"Redis stopped and restarted", func(c *chaos) time.Duration {
		if err := c.redis.Stop(); err != nil {
			c.t.Fatal(err)
		}
		time.Sleep(time.Duration(envInt("CHAOS_REDIS_DOWN_SECONDS", 10)) * time.Second)
		if err := c.redis.Start(); err != nil {
			c.t.Fatal(err)
		}
		return c.progress(time.Now())
	}},
	{"Kafka broker restarted from its data dir", func(c *chaos) time.Duration {
		c.kafka.Close()
		time.Sleep(2 * time.Second)
		c.startKafka()
		return c.progress(time.Now())
	}},
	{"slow Redis (20 ms per read/write, 8 s)", func(c *chaos) time.Duration {
		c.proxy.SetDelay(20 * time.Millisecond)
		time.Sleep(8 * time.Second)
		c.proxy.SetDelay(0)
		return c.progress(time.Now())
	}},
}

// deadServer: s4 stops heartbeating without server_down; once its lease ran
// out its users count as offline: persistent messages to them are pushed.
func (c *chaos) deadServer(run string, e *expectation) time.Duration {
	dead, cancel := context.WithCancel(context.Background())
	cancel()
	_ = c.dead.Close(dead)
	start := time.Now()
	testkit.Eventually(c.t, 2*c.s.cfg.Presence.Lease, "s4's users offline", func() bool {
		on, ok := c.s.onlineOK(350)
		return ok && !on
	})
	took := time.Since(start)
	for u := int64(301); u <= 350; u++ {
		content := run + "-dead-" + strconv.FormatInt(u, 10)
		e.add(e.push, content, u)
		send(func() error {
			return c.ims[0].Publish(context.Background(), app, u, schemas.Message{Cmd: 4, Sender: 1, Receiver: u, Content: content}, ingest.Meta{})
		})
	}
	return took
}

// verify compares what arrived for run with e: missing, extra (doubles or
// unexpected), and per-receiver order violations.
func (c *chaos) verify(run string, e *expectation) (missing, extra, order int) {
	ctx := context.Background()
	logged := 0
	note := func(format string, a ...any) {
		if logged < 8 {
			c.t.Logf(format, a...)
			logged++
		}
	}
	prefix := run + "-"
	got := map[string]int{}
	last := map[string]int{}
	for _, entry := range c.rc.LRange(ctx, "push_queue", 0, -1).Val() {
		var v struct {
			Content  string `json:"content"`
			Receiver int64  `json:"receiver"`
		}
		if json.Unmarshal([]byte(entry), &v) != nil || !strings.HasPrefix(v.Content, prefix) {
			continue
		}
		got[v.Content]++
		if e.redriven[v.Content] {
			continue
		}
		rest := strings.TrimPrefix(v.Content, prefix)
		if k, i, ok := strings.Cut(strings.TrimPrefix(rest, "flood"), "-"); ok && strings.HasPrefix(rest, "flood") {
			// A fair-share fault's flood: in order per receiver (docs/lanes.md).
			key := strconv.FormatInt(v.Receiver, 10) + "/flood" + k
			if n, err := strconv.Atoi(i); err == nil {
				if l, ok := last[key]; ok && n < l {
					order++
				}
				last[key] = n
			}
		} else if n, err := strconv.Atoi(rest); err == nil {
			// Order holds per receiver within a lane (docs/lanes.md):
			// events 0-3 mod 10 are pushes (the bulk lane), 4 and 5 IMs.
			k := strconv.FormatInt(v.Receiver, 10) + "/online"
			if n%10 <= 3 {
				k = strconv.FormatInt(v.Receiver, 10) + "/bulk"
			}
			if l, ok := last[k]; ok && n < l {
				order++
			}
			last[k] = n
		}
	}
	for content, r := range e.push {
		if got[content] == 0 {
			missing++
			note("missing push entry %s for %d", content, r)
		}
	}
	for content, n := range got {
		if _, ok := e.push[content]; !ok {
			extra += n
			note("unexpected push entry %s ×%d", content, n)
		} else if n > 1 {
			extra += n - 1
			note("push entry %s ×%d", content, n)
		}
	}
	ggot := map[string]int{}
	for _, entry := range c.rc.LRange(ctx, "group_push_queue", 0, -1).Val() {
		var v struct {
			Content   string  `json:"content"`
			Receivers []int64 `json:"receivers"`
		}
		if json.Unmarshal([]byte(entry), &v) == nil && strings.HasPrefix(v.Content, prefix) {
			ggot[v.Content]++
			if len(v.Receivers) != 20 {
				extra++ // wrong receivers
			}
		}
	}
	for content := range e.group {
		if ggot[content] == 0 {
			missing++
		}
	}
	for content, n := range ggot {
		if !e.group[content] {
			extra += n
		} else {
			extra += n - 1
		}
	}
	for server, want := range e.delivers {
		seen := map[string]int64{} // (deliver partition, src stream, src partition) → highest src offset
		dgot := map[string]int{}
		dlast := map[string]int{}
		recs := append(append([]kafkaMessage(nil), c.archived[server]...), testkit.ReadAll(c.t, c.s.cfg, c.s.cfg.Kafka.Topics.DeliverPrefix+server)...)
		for _, m := range recs {
			var rec schemas.Publish
			if json.Unmarshal(m.Value, &rec) != nil || rec.Src == nil || !strings.HasPrefix(rec.Msg.Content, prefix) {
				continue
			}
			k := strconv.Itoa(m.Partition) + "/" + rec.Src.Stream() + "/" + strconv.Itoa(rec.Src.Partition)
			if hi, ok := seen[k]; ok && rec.Src.Offset <= hi {
				continue // a repeat, dropped as an IM server does
			}
			seen[k] = rec.Src.Offset
			dgot[rec.Msg.Content]++
			if rec.Type == schemas.TypePublishRoom {
				continue // 32 workers send to one room concurrently: no defined order
			}
			n, _ := strconv.Atoi(strings.TrimPrefix(rec.Msg.Content, prefix))
			rk := strconv.FormatInt(rec.Receiver, 10)
			if l, ok := dlast[rk]; ok && n < l {
				order++
			}
			dlast[rk] = n
		}
		for content, r := range want {
			if dgot[content] == 0 {
				missing++
				on, _ := c.s.onlineOK(r)
				note("missing delivery %s to %d on %s (receiver online now: %v)", content, r, server, on)
			}
		}
		for content, n := range dgot {
			if _, ok := want[content]; !ok {
				extra += n
				note("unexpected delivery %s ×%d on %s", content, n, server)
			} else if n > 1 {
				extra += n - 1
				note("delivery %s ×%d on %s (distinct src offsets)", content, n, server)
			}
		}
	}
	return missing, extra, order
}

func TestChaos(t *testing.T) {
	n := envInt("CHAOS_EVENTS", 200000)
	c := newChaos(t)
	runs := append([]fault(nil), faults...)
	runs = append(runs, fault{"IM server stops heartbeating (no server_down)", nil}, fault{"mixed: four faults at random moments", nil})
	table := []string{"| fault | events | missing | extra | order violations | recovery |", "|---|---|---|---|---|---|"}
	failed := false
	for i, f := range runs {
		if !chaosOnly(f.name) {
			continue
		}
		run := "r" + strconv.Itoa(i)
		e := &expectation{push: map[string]int64{}, group: map[string]bool{}, delivers: map[string]map[string]int64{"s1": {}, "s2": {}, "s3": {}},
			redriven: map[string]bool{}}
		c.run, c.want = run, e
		before := c.sent.Load()
		runStart := time.Now()
		done := make(chan struct{})
		go func() { c.workload(run, n, e); close(done) }()
		// the fault strikes at a random moment of the run
		at := before + int64(n/5+rand.IntN(n/3+1))
		for c.sent.Load() < at {
			time.Sleep(10 * time.Millisecond)
		}
		var recovery time.Duration
		switch {
		case f.inject != nil:
			recovery = f.inject(c)
		case strings.HasPrefix(f.name, "IM server"):
			recovery = c.deadServer(run, e)
		default:
			var pool []fault // the mixed run draws from the faults not skipped
			for _, g := range faults {
				if !chaosSkipped(g.name) {
					pool = append(pool, g)
				}
			}
			// four different faults: a fault drawn twice would repeat its
			// own workload (the burst's contents are per run), which the
			// check would count as extra entries
			for _, j := range rand.Perm(len(pool))[:min(4, len(pool))] {
				g := pool[j]
				t.Logf("mixed: %s", g.name)
				recovery = max(recovery, g.inject(c))
			}
		}
		<-done
		sentAt := time.Now()
		testkit.WaitCaughtUp(t, c.s.cfg, c.s.cfg.Fanout.Group, c.s.cfg.Kafka.Topics.Publish, 5*time.Minute)
		testkit.WaitCaughtUp(t, c.s.cfg, c.s.cfg.Fanout.Group, c.s.cfg.Kafka.Topics.Bulk, 5*time.Minute)
		testkit.WaitCaughtUp(t, c.s.cfg, c.s.cfg.Fanout.Group+"-spill", c.s.cfg.Kafka.Topics.Spill, 5*time.Minute)
		testkit.WaitCaughtUp(t, c.s.cfg, c.s.cfg.Pusher.Group, c.s.cfg.Kafka.Topics.Push, 5*time.Minute)
		t.Logf("%s: workload sent, fanout and pusher caught up %s later", f.name, time.Since(sentAt).Round(time.Millisecond))
		missing, extra, order := c.verify(run, e)
		failed = failed || missing+extra+order > 0
		row := fmt.Sprintf("| %s | %d | %d | %d | %d | %.1fs |", f.name, c.sent.Load()-before, missing, extra, order, recovery.Seconds())
		table = append(table, row)
		t.Logf("%s (run took %s)", row, time.Since(runStart).Round(time.Millisecond))
	}
	if chaosOnly("gateway") {
		per, err := c.idleGatewayConnections()
		if err != nil {
			t.Error(err)
		}
		if per > 100<<10 {
			failed = true
		}
		table = append(table, fmt.Sprintf("| 1 000 idle gateway connections: %d KiB RSS each (bound 100 KB) | – | 0 | 0 | 0 | – |", per>>10))
		burst := min(n, 20000)
		missing, extra := c.twoServersOneHost(burst)
		failed = failed || missing+extra > 0
		table = append(table, fmt.Sprintf("| two IM servers on one host via the gateway, Kafka slowed | %d | %d | %d | – | – |", burst, missing, extra))
	}
	sort.Strings(table[2:])
	out := strings.Join(table, "\n")
	fmt.Println(out)
	if p := os.Getenv("CHAOS_OUT"); p != "" {
		_ = os.WriteFile(p, []byte(out+"\n"), 0o644)
	}
	if failed {
		t.Fatal("messages lost, doubled or reordered")
	}
}

// chaosOnly reports whether the run named name is selected: CHAOS_ONLY is a
// comma-separated list of substrings of the names to run (all when unset),
// CHAOS_SKIP one of names to leave out.
func chaosOnly(name string) bool {
	if chaosSkipped(name) {
		return false
	}
	only := os.Getenv("CHAOS_ONLY")
	if only == "" {
		return true
	}
	for _, s := range strings.Split(only, ",") {
		if s != "" && strings.Contains(name, s) {
			return true
		}
	}
	return false
}

// chaosSkipped reports whether CHAOS_SKIP names the run.
func chaosSkipped(name string) bool {
	for _, s := range strings.Split(os.Getenv("CHAOS_SKIP"), ",") {
		if s != "" && strings.Contains(name, s) {
			return true
		}
	}
	return false
}

func kafkaxConn(cfg config.Config) *kafkax.Conn { return kafkax.MustConn(cfg.Kafka) }
