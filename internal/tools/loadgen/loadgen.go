package loadgen

import (
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/imstream/imstream/gateway/imr"
	"github.com/imstream/imstream/ingest"
	"github.com/imstream/imstream/internal/plumbing/config"
	"github.com/imstream/imstream/internal/plumbing/kafkax"
	"github.com/imstream/imstream/schemas"
	"github.com/imstream/imstream/store"
)

// Options configures a load run.
type Options struct {
	Protocol string // "imr" (TCP to Gateway) or "kafka" (the ingest library)
	Gateway  string // imr: the gateway's (or an imr's) address
	Servers  int    // simulated IM servers (connections)
	Users    int    // online users per server
	Pushes   int    // MSG_PUSH messages, each to one offline user
	RT       int    // RT messages, each to an online user on another server
	Churn    bool   // users connect and leave during the run (users other than the targets)
	AppID    int64
	// IMR: the target is im_service's own router (imr), which keeps no
	// presence in Redis and drops pushes when its channel is full: the run
	// does not wait for presence, and stops waiting for push entries after
	// 5 s without one (60 s against imstream).
	IMR bool
	Out io.Writer // progress and report
}

// Report is the outcome of a run.
type Report struct {
	Sent            float64 `json:"sent"`
	SendSeconds     float64 `json:"send_seconds"`
	Pushes          int     `json:"pushes"`
	PushArrived     int     `json:"push_arrived"`
	PushLost        int     `json:"push_lost"`
	PushDoubled     int     `json:"push_doubled"`
	RT              int     `json:"rt"`
	RTArrived       int     `json:"rt_arrived"`
	RTLost          int     `json:"rt_lost"`
	RTDoubled       int     `json:"rt_doubled"`
	Seconds         float64 `json:"seconds"`           // first message sent to the last push entry arrived
	PushesPerSecond float64 `json:"pushes_per_second"` // push entries landed per second over Seconds
}

func (r Report) String() string {
	return fmt.Sprintf("sent %.0f messages in %.1fs (%.0f/s)\nMSG_PUSH: %d sent, %d arrived in push_queue, %d lost, %d doubled\nRT:       %d sent, %d arrived as frames, %d lost, %d doubled\nend to end: %.1fs, %.0f push entries/s",
		r.Sent, r.SendSeconds, r.Sent/max(r.SendSeconds, 1e-9), r.Pushes, r.PushArrived, r.PushLost, r.PushDoubled,
		r.RT, r.RTArrived, r.RTLost, r.RTDoubled, r.Seconds, r.PushesPerSecond)
}

// server is one simulated IM server, over either protocol.
type server interface {
	subscribe(appid, uid int64, online bool) error
	unsubscribe(appid, uid int64) error
	rt(appid, to int64, m schemas.Message) error
	push(appid int64, receivers []int64, m schemas.Message) error
	flush() error
	frames() <-chan imr.Frame
	close()
}

// Run drives the load against a running imstream (cfg names its Kafka and
// Redis) and reports what arrived.
func Run(ctx context.Context, cfg config.Config, rc redis.UniversalClient, o Options) (Report, error) {
	if o.AppID == 0 {
		o.AppID = 7
	}
	r := &runner{o: o, rc: rc, run: strconv.FormatInt(time.Now().UnixNano(), 36)}
	r.servers = make([]server, o.Servers)
	for i := range r.servers {
		var err error
		if r.servers[i], err = dial(ctx, cfg, o, i); err != nil {
			return Report{}, err
		}
		defer r.servers[i].close()
	}
	if err := r.connectUsers(ctx, store.NewRedisPresence(rc, cfg.Redis.KeyPrefix, cfg.Presence.Lease, 0), !o.IMR); err != nil {
		return Report{}, err
	}
	fmt.Fprintf(o.Out, "%d servers up, %d users online each; sending %d MSG_PUSH and %d RT over %s\n", o.Servers, o.Users, o.Pushes, o.RT, o.Protocol)

	base := rc.LLen(ctx, "push_queue").Val()
	rts := &rtCounter{seen: map[string]int{}, prefix: "rt-" + r.run + "-"}
	for _, srv := range r.servers {
		go rts.count(ctx, srv.frames())
	}
	rep, err := r.send(ctx)
	if err != nil {
		return Report{}, err
	}
	last, err := r.awaitPushes(ctx, base)
	if err != nil {
		return rep, err
	}
	rep.Seconds = last.Sub(r.start).Seconds()
	time.Sleep(time.Second) // late doubles would show now
	seen, err := PushEntries(ctx, rc, base, "push-"+r.run+"-")
	if err != nil {
		return rep, err
	}
	rep.PushArrived, rep.PushLost, rep.PushDoubled = tally(seen, rep.Pushes)
	rep.PushesPerSecond = float64(rep.PushArrived) / rep.Seconds
	rep.RTArrived, rep.RTLost, rep.RTDoubled = tally(rts.snapshot(), rep.RT)
	return rep, nil
}

// runner is one load run: its servers and the tag its contents carry.
type runner struct {
	o       Options
	rc      redis.UniversalClient
	run     string
	servers []server
	start   time.Time
}

// online is the uid of online user u of server s.
func online(s, u int) int64 { return int64(1_000_000*(s+1) + u + 1) }

// connectUsers subscribes every server's users and, with wait, waits until
// presence shows the last user of every server online.
func (r *runner) connectUsers(ctx context.Context, ps store.PresenceStore, wait bool) error {
	last := make([]int64, len(r.servers))
	for s, srv := range r.servers {
		for u := 0; u < r.o.Users; u++ {
			if err := srv.subscribe(r.o.AppID, online(s, u), true); err != nil {
				return err
			}
		}
		if err := srv.flush(); err != nil {
			return err
		}
		last[s] = online(s, r.o.Users-1)
	}
	for wait {
		got, err := ps.Users(ctx, r.o.AppID, last, time.Now())
		if err != nil {
			return err
		}
		ok := true
		for _, p := range got {
			ok = ok && p.Online
		}
		if ok {
			return nil
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
	return nil
}

// send sends every message, each server its share, printing progress, and
// reports what was sent.
func (r *runner) send(ctx context.Context) (Report, error) {
	stopChurn := make(chan struct{})
	if r.o.Churn {
		for s, srv := range r.servers {
			go churn(ctx, srv, r.o.AppID, int64(900_000_000+s*10_000), stopChurn)
		}
	}
	r.start = time.Now()
	var sent atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, len(r.servers))
	for s, srv := range r.servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- r.sendShare(s, srv, &sent)
		}()
	}
	progress := time.NewTicker(2 * time.Second)
	defer progress.Stop()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	for waiting := true; waiting; {
		select {
		case <-done:
			waiting = false
		case <-progress.C:
			fmt.Fprintf(r.o.Out, "  sending: %d messages, %.0f/s\n", sent.Load(), float64(sent.Load())/time.Since(r.start).Seconds())
		}
	}
	close(stopChurn)
	for range r.servers {
		if err := <-errs; err != nil {
			return Report{}, err
		}
	}
	rep := Report{Sent: float64(sent.Load()), SendSeconds: time.Since(r.start).Seconds(), Pushes: r.o.Pushes}
	if r.o.Servers > 1 {
		rep.RT = r.o.RT
	}
	return rep, nil
}

// sendShare sends server s's messages: pushes to never-online users and
// RT to users online on the other servers.
func (r *runner) sendShare(s int, srv server, sent *atomic.Int64) error {
	o := r.o
	for i := s; i < max(o.Pushes, o.RT); i += o.Servers {
		if i < o.Pushes {
			to := int64(500_000_000 + i%100_000) // never online
			m := schemas.Message{Cmd: schemas.CmdIM, Version: 2, Sender: online(s, 0), Receiver: to, Content: "push-" + r.run + "-" + strconv.Itoa(i)}
			if err := srv.push(o.AppID, []int64{to}, m); err != nil {
				return err
			}
			sent.Add(1)
		}
		if i < o.RT && o.Servers > 1 {
			peer := (s + 1 + i%(o.Servers-1)) % o.Servers
			to := online(peer, i%o.Users)
			m := schemas.Message{Cmd: schemas.CmdRT, Sender: online(s, 0), Receiver: to, Content: "rt-" + r.run + "-" + strconv.Itoa(i)}
			if err := srv.rt(o.AppID, to, m); err != nil {
				return err
			}
			sent.Add(1)
		}
	}
	return srv.flush()
}

// awaitPushes waits until push_queue holds every push past base, or gives
// up after 60 s without progress (5 s against imr, which drops); it
// returns when the last entry it saw arrived (to the poll's resolution).
func (r *runner) awaitPushes(ctx context.Context, base int64) (time.Time, error) {
	patience := 60 * time.Second
	if r.o.IMR {
		patience = 5 * time.Second
	}
	lastN, lastChange := int64(-1), time.Now()
	for {
		n := r.rc.LLen(ctx, "push_queue").Val() - base
		if n != lastN {
			lastN, lastChange = n, time.Now()
			fmt.Fprintf(r.o.Out, "  arrived: %d push entries\n", n)
		}
		if n >= int64(r.o.Pushes) || time.Since(lastChange) > patience {
			return lastChange, nil
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return lastChange, err
		}
	}
}

// tally counts, of the contents 0..n-1, how many arrived, how many did
// not and how many extra copies arrived.
func tally(seen map[string]int, n int) (arrived, lost, doubled int) {
	for i := 0; i < n; i++ {
		switch c := seen[strconv.Itoa(i)]; {
		case c == 0:
			lost++
		default:
			arrived++
			doubled += c - 1
		}
	}
	return arrived, lost, doubled
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// PushEntries counts the entries in push_queue from index from on whose
// content starts with prefix, by the rest of the content up to its quote.
func PushEntries(ctx context.Context, rc redis.UniversalClient, from int64, prefix string) (map[string]int, error) {
	seen := map[string]int{}
	key := `"content":"` + prefix
	for off := from; ; off += 50_000 {
		es, err := rc.LRange(ctx, "push_queue", off, off+49_999).Result()
		if err != nil {
			return nil, err
		}
		for _, e := range es {
			if i := strings.Index(e, key); i >= 0 {
				rest := e[i+len(key):]
				seen[rest[:strings.IndexByte(rest, '"')]]++
			}
		}
		if len(es) < 50_000 {
			return seen, nil
		}
	}
}

type rtCounter struct {
	mu     sync.Mutex
	prefix string
	seen   map[string]int
}

func (c *rtCounter) count(ctx context.Context, frames <-chan imr.Frame) {
	Contents(ctx, frames, c.prefix, func(rest string, _ time.Time) {
		c.mu.Lock()
		c.seen[rest]++
		c.mu.Unlock()
	})
}

// Contents reads delivered frames until ctx ends or frames closes, and
// calls fn with the content after prefix of every message whose content
// starts with it, and the time the frame was read. Other frames are skipped.
func Contents(ctx context.Context, frames <-chan imr.Frame, prefix string, fn func(rest string, at time.Time)) {
	for {
		select {
		case <-ctx.Done():
			return
		case f, ok := <-frames:
			if !ok {
				return
			}
			at := time.Now()
			rt, err := imr.ParseRoute(f.Body)
			if err != nil {
				continue
			}
			m, err := imr.ParseInner(rt.Inner)
			if err != nil || !strings.HasPrefix(m.Content, prefix) {
				continue
			}
			fn(strings.TrimPrefix(m.Content, prefix), at)
		}
	}
}

func (c *rtCounter) snapshot() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int, len(c.seen))
	for k, v := range c.seen {
		out[k] = v
	}
	return out
}

// churn connects and disconnects users of a range no message targets.
func churn(ctx context.Context, srv server, appid, base int64, stop <-chan struct{}) {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for i := int64(0); ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-stop:
			return
		case <-t.C:
		}
		uid := base + i%500
		if i/500%2 == 0 {
			_ = srv.subscribe(appid, uid, true)
		} else {
			_ = srv.unsubscribe(appid, uid)
		}
	}
}

// sourceIP is the local address simulated IM server i connects from: a
// loopback address of its own (127.0.0.10+i) when the gateway is on this
// host over IPv4, so that the gateway's ip-based server ids tell the
// servers apart; otherwise the kernel's choice (a remote gateway names
// them imr-<ip>, imr-<ip>-2, ...).
func sourceIP(gateway string, i int) string {
	host, _, err := net.SplitHostPort(gateway)
	if err != nil {
		return ""
	}
	ips, err := net.LookupIP(host)
	if err != nil || len(ips) == 0 || !ips[0].IsLoopback() || ips[0].To4() == nil {
		return ""
	}
	return "127.0.0." + strconv.Itoa(10+i)
}

func dial(ctx context.Context, cfg config.Config, o Options, i int) (server, error) {
	if o.Protocol == "kafka" {
		p, err := ingest.New(ctx, ingest.Config{Brokers: cfg.Kafka.Brokers, Server: "lg-" + strconv.Itoa(i+1),
			PresenceTopic: cfg.Kafka.Topics.Presence, PublishTopic: cfg.Kafka.Topics.Publish, BulkTopic: cfg.Kafka.Topics.Bulk, Linger: 5 * time.Millisecond,
			CreateTopics: true, Partitions: cfg.Kafka.Partitions, Transport: kafkax.MustConn(cfg.Kafka).Transport})
		if err != nil {
			return nil, err
		}
		if err := p.Start(ctx); err != nil {
			return nil, err
		}
		topic := cfg.Kafka.Topics.DeliverPrefix + p.Server()
		if err := kafkaxEnsure(ctx, cfg, topic); err != nil {
			return nil, err
		}
		return newKafkaServer(p, cfg.Kafka.Brokers, topic), nil
	}
	c, err := Dial(ctx, o.Gateway, sourceIP(o.Gateway, i))
	if err != nil {
		return nil, fmt.Errorf("loadgen: connect to %s: %w", o.Gateway, err)
	}
	return imrServer{c}, nil
}

type imrServer struct{ c *Client }

func (s imrServer) subscribe(appid, uid int64, online bool) error {
	var on int8
	if online {
		on = 1
	}
	return s.c.Send(imr.CmdSubscribe, imr.AppendSubscribe(nil, imr.Subscribe{AppID: appid, UID: uid, Online: on}))
}
func (s imrServer) unsubscribe(appid, uid int64) error {
	return s.c.Send(imr.CmdUnsubscribe, imr.AppendID(nil, imr.ID{AppID: appid, ID: uid}))
}
func (s imrServer) rt(appid, to int64, m schemas.Message) error {
	return s.c.Send(imr.CmdPublish, imr.AppendRoute(nil, imr.Route{AppID: appid, Receiver: to, Timestamp: time.Now().UnixNano(), Inner: imr.AppendInner(nil, m)}))
}
func (s imrServer) push(appid int64, receivers []int64, m schemas.Message) error {
	return s.c.Send(imr.CmdPush, imr.AppendPush(nil, imr.Push{AppID: appid, Receivers: receivers, Inner: imr.AppendInner(nil, m)}))
}
func (s imrServer) flush() error             { return s.c.Flush() }
func (s imrServer) frames() <-chan imr.Frame { return s.c.Frames() }
func (s imrServer) close()                   { _ = s.c.Close() }

func kafkaxEnsure(ctx context.Context, cfg config.Config, topic string) error {
	return kafkax.MustConn(cfg.Kafka).EnsureTopics(ctx, cfg.Kafka.ReplicationFactor, map[string]int{topic: cfg.Kafka.DeliverPartitions})
}
