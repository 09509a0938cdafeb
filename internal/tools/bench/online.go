package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/imstream/imstream/gateway/imr"
	"github.com/imstream/imstream/internal/plumbing/config"
	"github.com/imstream/imstream/internal/tools/embedded"
	"github.com/imstream/imstream/internal/tools/loadgen"
	"github.com/imstream/imstream/internal/tools/status"
	"github.com/imstream/imstream/schemas"
)

// The online scenarios run the drop-in path as deployed: `imstream
// gateway` and `imstream all` as processes of this binary on the embedded
// broker, IM servers as the loadgen's imr-protocol clients. One IM server
// sends RT messages at a steady rate to a user present on another; each
// carries its send time, and the receiving connection measures the
// latency to the frame it reads (gateway → imr.publish → fanout →
// imr.deliver.<server> → gateway → socket).
const (
	onlineUser   = 1000 // the receiver, present on connection B
	burstClients = 4    // connections pushing the burst
)

// OnlineLatency: RT at Options.OnlineRate (default 1 000/s) for
// Options.OnlineFor (default 20 s), nothing else running.
func (b *Bench) OnlineLatency(ctx context.Context) error {
	return b.online(ctx, b.o.OnlineRate, 0)
}

// OnlineUnderBurst: RT at 200/s while four other connections push
// Options.Events MSG_PUSH (to offline users) as fast as the gateway takes
// them; RT runs until the whole burst has landed in push_queue.
func (b *Bench) OnlineUnderBurst(ctx context.Context) error {
	return b.online(ctx, 200, b.o.Events)
}

func (b *Bench) online(ctx context.Context, rate, pushes int) error {
	if b.o.IMR != "" && pushes > 0 {
		if err := b.onlineOn(ctx, rate, pushes, true); err != nil {
			return err
		}
	}
	return b.onlineOn(ctx, rate, pushes, false)
}

// onlineOn runs an online scenario against imstream's drop-in path or,
// with onIMR, against imr (Options.IMR).
func (b *Bench) onlineOn(ctx context.Context, rate, pushes int, onIMR bool) error {
	name := fmt.Sprintf("online latency: RT %d/s between two IM servers, gateway and roles as processes", rate)
	if pushes > 0 {
		name = fmt.Sprintf("online latency under burst: RT %d/s while %d MSG_PUSH go through %d other connections", rate, pushes, burstClients)
	}
	if onIMR {
		name = "imr: " + name
	}
	cfg := b.scenario(name)
	t, err := b.startTarget(ctx, cfg, onIMR)
	if err != nil {
		return err
	}
	defer t.stop()
	addr := t.addr

	a, err := dialRetry(ctx, addr, "127.0.0.2")
	if err != nil {
		return err
	}
	defer a.Close()
	rx, err := dialRetry(ctx, addr, "127.0.0.3")
	if err != nil {
		return err
	}
	defer rx.Close()
	if err := rx.Send(imr.CmdSubscribe, imr.AppendSubscribe(nil, imr.Subscribe{AppID: app, UID: onlineUser, Online: 1})); err != nil {
		return err
	}
	if err := rx.Flush(); err != nil {
		return err
	}
	lat := &latencies{seen: map[int]int{}}
	go lat.read(ctx, rx.Frames())
	if err := warmUp(ctx, a, lat); err != nil {
		return err
	}

	m := b.meter()
	cpu0 := t.cpu()
	start := time.Now()
	landed := make(chan burstResult, 1)
	if pushes > 0 {
		go func() { landed <- b.burst(ctx, cfg, addr, pushes, onIMR) }()
	}
	var sent int
	if pushes > 0 {
		done := false
		var br burstResult
		sent = sendRT(ctx, a, rate, func() bool {
			select {
			case br = <-landed:
				done = true
			default:
			}
			return done
		})
		lat.wait(sent, 10*time.Second)
		res := lat.result(sent, t.prefix+"online latency under a MSG_PUSH burst (RT 200/s)")
		res.Note = fmt.Sprintf("RT %d sent, %d lost, %d doubled", sent, res.Lost, lat.doubled()) + t.hops()
		b.record(m, res)
		if br.err != nil {
			return br.err
		}
		br.row.Scenario = t.prefix + br.row.Scenario
		b.pathCPU(&br.row, m, cpu0, t, br.cpu) // the broker's share includes the two RT connections
		b.results = append(b.results, br.row)
		return nil
	}
	end := start.Add(b.o.OnlineFor)
	sent = sendRT(ctx, a, rate, func() bool { return time.Now().After(end) })
	lat.wait(sent, 10*time.Second)
	res := lat.result(sent, fmt.Sprintf("%sonline latency (RT %d/s steady)", t.prefix, rate))
	res.Note = fmt.Sprintf("RT %d sent, %d lost, %d doubled", sent, res.Lost, lat.doubled()) + t.cpuNote(cpu0, sent) + t.hops()
	b.record(m, res)
	return nil
}

// hops reads the e2e latency quantiles each process measured: event ts to
// the deliver topic's acknowledgement (fanout), and to the frame written on
// the IM server's socket (gateway). Their ts has millisecond resolution.
// imr measures none.
func (t target) hops() string {
	if t.imr {
		return ""
	}
	gateway, all := t.procs["gateway"], t.procs["roles"]
	if all == nil {
		all = t.procs["fanout-online"]
	}
	var out []string
	for _, h := range []struct {
		c          *child
		sink, name string
	}{{all, "deliver_topic", "ts → deliver topic (fanout)"}, {gateway, "im_server", "ts → IM server socket (gateway)"}} {
		mfs, err := status.Scrape(&http.Client{Timeout: 5 * time.Second}, h.c.admin)
		if err != nil {
			out = append(out, h.name+": "+err.Error())
			continue
		}
		p50, p99, _ := quantilesOf(mfs, h.sink)
		out = append(out, fmt.Sprintf("%s p50 %.1f / p99 %.1f ms", h.name, p50*1e3, p99*1e3))
		if h.c == t.procs["fanout-online"] { // a process of online work alone: its steps are the online lane's
			for _, step := range []struct{ name, label, value, what string }{
				{"imstream_kafka_produce_duration_seconds", "stage", "fanout", "produce"},
				{"imstream_redis_call_duration_seconds", "op", "users", "presence look-up"},
				{"imstream_batch_handle_duration_seconds", "stage", "fanout", "batch"},
			} {
				p50, p99, _ := histQuantiles(mfs, step.name, step.label, step.value)
				out = append(out, fmt.Sprintf("online fanout's %s p50 %.1f / p99 %.1f ms", step.what, p50*1e3, p99*1e3))
			}
		}
	}
	return "; hops: " + strings.Join(out, ", ")
}

// target is what the simulated IM servers connect to: imstream's drop-in
// path (`imstream gateway` and `imstream all` as processes) or im_service's
// imr (Options.IMR), each on a free port against this bench's Redis.
type target struct {
	addr   string
	imr    bool
	prefix string            // "imr: " for imr's rows
	procs  map[string]*child // gateway and roles, or imr
	order  []string          // the names of procs, in report order
}

// startTarget empties Redis and starts the target on a free port.
func (b *Bench) startTarget(ctx context.Context, cfg config.Config, onIMR bool) (target, error) {
	if err := b.flush(ctx); err != nil {
		return target{}, err
	}
	port, err := embedded.FreePort()
	if err != nil {
		return target{}, err
	}
	t := target{addr: "127.0.0.1:" + strconv.Itoa(port), imr: onIMR, procs: map[string]*child{}}
	if onIMR {
		t.prefix = "imr: "
		c, err := b.startIMR(cfg, t.addr)
		if err != nil {
			return target{}, err
		}
		t.add("imr", c)
		return t, nil
	}
	// The roles: one process, or with Options.LanesApart the online work
	// (presence, the online lane's fanout) and the bulk work (the bulk
	// lane's fanout, the pusher) in processes of their own, the bulk ones
	// at nice 10, as docs/lanes.md deploys them on one host.
	roles := []struct {
		name string
		args []string
		nice bool
	}{{"roles", []string{"all"}, false}}
	if b.o.LanesApart {
		t.prefix = "lanes apart: "
		roles = []struct {
			name string
			args []string
			nice bool
		}{
			{"presence", []string{"presence"}, false},
			{"fanout-online", []string{"fanout", "--fanout.lanes", "online"}, false},
			{"fanout-bulk", []string{"fanout", "--fanout.lanes", "bulk"}, true},
			{"pusher", []string{"pusher"}, true},
		}
	}
	for _, r := range roles {
		c, err := b.startChild(cfg, r.args[0], r.args[1:]...)
		if err != nil {
			t.stop()
			return target{}, err
		}
		if r.nice {
			if err := syscall.Setpriority(syscall.PRIO_PROCESS, c.pid(), 10); err != nil {
				fmt.Fprintf(b.o.Out, "   nice 10 for %s: %v\n", r.name, err)
			}
		}
		t.add(r.name, c)
	}
	gateway, err := b.startChild(cfg, "gateway", "--gateway.listen", t.addr)
	if err != nil {
		t.stop()
		return target{}, err
	}
	t.order = append([]string{"gateway"}, t.order...)
	t.procs["gateway"] = gateway
	return t, nil
}

func (t *target) add(name string, c *child) {
	t.procs[name] = c
	t.order = append(t.order, name)
}

func (t target) stop() {
	for _, name := range t.order {
		t.procs[name].stop()
	}
}

// cpu reads each process's CPU seconds.
func (t target) cpu() map[string]float64 {
	cpu := map[string]float64{}
	for name, c := range t.procs {
		cpu[name] = c.cpu()
	}
	return cpu
}

// cpuNote reports each process's CPU seconds per M events since cpu0.
func (t target) cpuNote(cpu0 map[string]float64, events int) string {
	var parts []string
	for _, name := range t.order {
		parts = append(parts, fmt.Sprintf("%s %.1f", name, (t.procs[name].cpu()-cpu0[name])/float64(max(events, 1))*1e6))
	}
	return "; CPU s per M events: " + strings.Join(parts, ", ")
}

// pathCPU fills r's CPU per M events of the target since m and cpu0 were
// taken — its processes, this process (the broker; imstream only) and
// Redis — and notes each, with the load generator's (loadgen seconds) apart.
func (b *Bench) pathCPU(r *Result, m *meter, cpu0 map[string]float64, t target, loadgen float64) {
	per := func(s float64) float64 { return s / float64(max(r.Events, 1)) * 1e6 }
	var total float64
	var parts []string
	for _, name := range t.order {
		s := t.procs[name].cpu() - cpu0[name]
		total += s
		parts = append(parts, fmt.Sprintf("%s %.1f", name, per(s)))
	}
	if !t.imr {
		broker := cpuSeconds(0) - m.cpu0
		total += broker
		parts = append(parts, fmt.Sprintf("broker %.1f", per(broker)))
	}
	redis := cpuSeconds(b.redisPID) - m.redis0
	total += redis
	parts = append(parts, fmt.Sprintf("Redis %.1f", per(redis)))
	r.CPUPerMEv, r.RedisCPU = per(total), per(redis)
	r.Note += fmt.Sprintf("; CPU s per M events: %s (load generator %.1f, not counted)", strings.Join(parts, ", "), per(loadgen))
}

type burstResult struct {
	row Result
	cpu float64 // the loadgen process's CPU seconds
	err error
}

// burst runs `imstream loadgen` as a process: burstClients imr-protocol
// connections push n MSG_PUSH, each to an offline user, as fast as the
// gateway reads them; it waits until push_queue holds them all and counts
// lost and doubled entries.
func (b *Bench) burst(ctx context.Context, cfg config.Config, addr string, n int, onIMR bool) burstResult {
	out := filepath.Join(os.TempDir(), fmt.Sprintf("imstream-bench-burst-%d.json", os.Getpid()))
	defer os.Remove(out)
	lg, err := b.startChild(cfg, "loadgen", "--gateway", addr, "--servers", strconv.Itoa(burstClients), "--users", "1",
		"--pushes", strconv.Itoa(n), "--rt", "0", "--churn=false", "--json", out, "--imr="+strconv.FormatBool(onIMR))
	if err != nil {
		return burstResult{err: err}
	}
	defer lg.stop()
	select {
	case <-lg.done:
	case <-ctx.Done():
		return burstResult{err: ctx.Err()}
	}
	var rep loadgen.Report
	raw, err := os.ReadFile(out)
	if err == nil {
		err = json.Unmarshal(raw, &rep)
	}
	if err != nil {
		return burstResult{err: fmt.Errorf("bench: the burst's loadgen left no report: %w", err)}
	}
	return burstResult{cpu: lg.cpu(), row: Result{Scenario: "  the burst: MSG_PUSH landing in push_queue", Events: n,
		Seconds: rep.Seconds, PerSecond: rep.PushesPerSecond, Lost: rep.PushLost,
		Note: fmt.Sprintf("%d entries, %d lost, %d doubled", rep.PushArrived, rep.PushLost, rep.PushDoubled)}}
}

// dialRetry connects an IM server, waiting up to 30 s for the gateway to
// listen.
func dialRetry(ctx context.Context, addr, localIP string) (*loadgen.Client, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := loadgen.Dial(ctx, addr, localIP)
		if err == nil {
			return c, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, fmt.Errorf("bench: connect to the gateway at %s: %w", addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// warmUp sends RT until one arrives: presence has applied the receiver's
// subscribe and every consumer has joined.
func warmUp(ctx context.Context, a *loadgen.Client, lat *latencies) error {
	deadline := time.Now().Add(60 * time.Second)
	for i := -1; ; i-- {
		if err := sendOne(a, i); err != nil {
			return err
		}
		if lat.any() {
			lat.reset()
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("bench: no RT message arrived within 60 s (gateway or roles not ready)")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// sendRT sends RT messages at rate until stop says so, paced by the clock
// (a late tick sends what it owes at once); it returns how many it sent.
func sendRT(ctx context.Context, a *loadgen.Client, rate int, stop func() bool) int {
	start := time.Now()
	sent := 0
	for !stop() && ctx.Err() == nil {
		due := int(time.Since(start).Seconds() * float64(rate))
		for ; sent < due; sent++ {
			if sendOne(a, sent) != nil {
				return sent
			}
		}
		time.Sleep(time.Second / time.Duration(rate) / 2)
	}
	return sent
}

// sendOne sends RT number i with its send time and flushes it.
func sendOne(a *loadgen.Client, i int) error {
	m := schemas.Message{Cmd: schemas.CmdRT, Sender: 1, Receiver: onlineUser,
		Content: "lat:" + strconv.Itoa(i) + ":" + strconv.FormatInt(time.Now().UnixNano(), 10)}
	if err := a.Send(imr.CmdPublish, imr.AppendRoute(nil, imr.Route{AppID: app, Receiver: onlineUser, Inner: imr.AppendInner(nil, m)})); err != nil {
		return err
	}
	return a.Flush()
}

// latencies collects the RT messages a connection receives.
type latencies struct {
	mu   sync.Mutex
	d    []time.Duration
	seen map[int]int
}

// read records the RT messages sendOne sent ("lat:<n>:<unix ns>").
func (l *latencies) read(ctx context.Context, frames <-chan imr.Frame) {
	loadgen.Contents(ctx, frames, "lat:", func(rest string, at time.Time) {
		n, sent, _ := strings.Cut(rest, ":")
		i, _ := strconv.Atoi(n)
		ns, _ := strconv.ParseInt(sent, 10, 64)
		l.mu.Lock()
		defer l.mu.Unlock()
		l.seen[i]++
		if i >= 0 && l.seen[i] == 1 {
			l.d = append(l.d, at.Sub(time.Unix(0, ns)))
		}
	})
}

func (l *latencies) any() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.seen) > 0
}

func (l *latencies) reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.d, l.seen = nil, map[int]int{}
}

// wait waits until n messages arrived, at most idle after the last one.
func (l *latencies) wait(n int, idle time.Duration) {
	last, lastN := time.Now(), -1
	for time.Since(last) < idle {
		l.mu.Lock()
		got := len(l.d)
		l.mu.Unlock()
		if got >= n {
			return
		}
		if got != lastN {
			last, lastN = time.Now(), got
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (l *latencies) doubled() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for i, c := range l.seen {
		if i >= 0 && c > 1 {
			n += c - 1
		}
	}
	return n
}

// result is the row: exact quantiles of what arrived; lost = sent - arrived.
func (l *latencies) result(sent int, scenario string) Result {
	l.mu.Lock()
	d := slices.Clone(l.d)
	l.mu.Unlock()
	slices.Sort(d)
	q := func(p float64) float64 {
		if len(d) == 0 {
			return 0
		}
		return d[min(int(p*float64(len(d))), len(d)-1)].Seconds()
	}
	return Result{Scenario: scenario, Events: sent, Lost: sent - len(d), P50: q(0.5), P99: q(0.99), P999: q(0.999)}
}

// GatewayPath: the drop-in path's throughput, without online traffic —
// Options.Events MSG_PUSH for offline users over burstClients imr-protocol
// connections (an `imstream loadgen` process) through an `imstream gateway`
// process and an `imstream all` process on the embedded broker, into the
// push lists: landing rate, lost and doubled, CPU seconds per M events of
// each process (gateway, roles, broker, Redis; the load generator apart).
// With Options.IMR the same load goes through imr first, into the same
// Redis.
func (b *Bench) GatewayPath(ctx context.Context) error {
	if b.o.IMR != "" {
		if err := b.gatewayPathOn(ctx, true); err != nil {
			return err
		}
	}
	return b.gatewayPathOn(ctx, false)
}

func (b *Bench) gatewayPathOn(ctx context.Context, onIMR bool) error {
	name := fmt.Sprintf("gateway path: %d MSG_PUSH over %d imr connections → gateway → fanout → pusher → lists, as processes", b.o.Events, burstClients)
	if onIMR {
		name = fmt.Sprintf("imr: %d MSG_PUSH over %d connections → imr → push_queue", b.o.Events, burstClients)
	}
	cfg := b.scenario(name)
	t, err := b.startTarget(ctx, cfg, onIMR)
	if err != nil {
		return err
	}
	defer t.stop()
	probe, err := dialRetry(ctx, t.addr, "127.0.0.9") // the target listens
	if err != nil {
		return err
	}
	probe.Close()
	m := b.meter()
	cpu0 := t.cpu()
	profiled := func() {}
	if !onIMR {
		profiled = b.profileChildren(ctx, "gateway-path", 2*time.Second, 5*time.Second, t.procs)
	}
	br := b.burst(ctx, cfg, t.addr, b.o.Events, onIMR)
	profiled()
	if br.err != nil {
		return br.err
	}
	r := br.row
	r.Scenario = t.prefix + "gateway path (1M MSG_PUSH, processes)"
	if b.o.Events != 1_000_000 {
		r.Scenario = fmt.Sprintf("%sgateway path (%d MSG_PUSH, processes)", t.prefix, b.o.Events)
	}
	b.pathCPU(&r, m, cpu0, t, br.cpu)
	b.stopProfile(m, r.Scenario)
	b.results = append(b.results, r)
	fmt.Fprintf(b.o.Out, "   %d entries in %.2fs: %.0f/s\n", r.Events, r.Seconds, r.PerSecond)
	return nil
}
