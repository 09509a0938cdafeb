package bench

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/imstream/imstream/ingest/imr"
	"github.com/imstream/imstream/internal/devstack"
	"github.com/imstream/imstream/internal/loadgen"
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
	name := fmt.Sprintf("online latency: RT %d/s between two IM servers, gateway and roles as processes", rate)
	if pushes > 0 {
		name = fmt.Sprintf("online latency under burst: RT %d/s while %d MSG_PUSH go through %d other connections", rate, pushes, burstClients)
	}
	cfg := b.scenario(name)
	if err := b.flush(ctx); err != nil {
		return err
	}
	gw, err := devstack.FreePort()
	if err != nil {
		return err
	}
	addr := "127.0.0.1:" + strconv.Itoa(gw)
	all, err := b.startChild(cfg, "all")
	if err != nil {
		return err
	}
	defer all.stop()
	gateway, err := b.startChild(cfg, "gateway", "--gateway.listen", addr)
	if err != nil {
		return err
	}
	defer gateway.stop()

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
	cpu0 := map[string]float64{"gateway": cpuSeconds(gateway.pid()), "roles": cpuSeconds(all.pid())}
	start := time.Now()
	landed := make(chan burstResult, 1)
	if pushes > 0 {
		go func() { landed <- b.burst(ctx, addr, pushes) }()
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
		res := lat.result(sent, "online latency under a MSG_PUSH burst (RT 200/s)")
		res.Note = fmt.Sprintf("RT %d sent, %d lost, %d doubled", sent, res.Lost, lat.doubled())
		b.record(m, res)
		if br.err != nil {
			return br.err
		}
		r := &br.row
		r.PerSecond = float64(r.Events) / r.Seconds
		procs := cpuSeconds(gateway.pid()) - cpu0["gateway"] + cpuSeconds(all.pid()) - cpu0["roles"]
		here := cpuSeconds(0) - m.cpu0 // the broker and the IM servers' clients
		redis := cpuSeconds(b.redisPID) - m.redis0
		r.CPUPerMEv = (procs + here + redis) / float64(r.Events) * 1e6
		r.RedisCPU = redis / float64(r.Events) * 1e6
		r.Note += b.cpuNote(cpu0, gateway, all, r.Events) + fmt.Sprintf(", broker and IM-server clients %.1f, Redis %.1f",
			here/float64(r.Events)*1e6, r.RedisCPU)
		b.results = append(b.results, *r)
		return nil
	}
	end := start.Add(b.o.OnlineFor)
	sent = sendRT(ctx, a, rate, func() bool { return time.Now().After(end) })
	lat.wait(sent, 10*time.Second)
	res := lat.result(sent, fmt.Sprintf("online latency (RT %d/s steady)", rate))
	res.Note = fmt.Sprintf("RT %d sent, %d lost, %d doubled", sent, res.Lost, lat.doubled()) + b.cpuNote(cpu0, gateway, all, sent)
	b.record(m, res)
	return nil
}

// cpuNote reports the gateway's and the roles' CPU seconds per M events
// since cpu0.
func (b *Bench) cpuNote(cpu0 map[string]float64, gateway, all *child, events int) string {
	per := func(pid int, from float64) float64 { return (cpuSeconds(pid) - from) / float64(max(events, 1)) * 1e6 }
	return fmt.Sprintf("; CPU s per M events: gateway %.1f, roles %.1f", per(gateway.pid(), cpu0["gateway"]), per(all.pid(), cpu0["roles"]))
}

type burstResult struct {
	row Result
	err error
}

// burst pushes n MSG_PUSH, each to one offline user, through burstClients
// connections as fast as the gateway reads them, then waits until push_queue
// holds them all (or nothing lands for 30 s) and counts lost and doubled.
func (b *Bench) burst(ctx context.Context, addr string, n int) burstResult {
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, burstClients)
	for c := range burstClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl, err := dialRetry(ctx, addr, "127.0.0."+strconv.Itoa(20+c))
			if err != nil {
				errs <- err
				return
			}
			defer cl.Close()
			for i := c; i < n; i += burstClients {
				m := schemas.Message{Cmd: schemas.CmdIM, Version: 2, Sender: 1, Receiver: offline(i), Content: "burst-" + strconv.Itoa(i)}
				body := imr.AppendPush(nil, imr.Push{AppID: app, Receivers: []int64{offline(i)}, Inner: imr.AppendInner(nil, m)})
				if err := cl.Send(imr.CmdPush, body); err != nil {
					errs <- err
					return
				}
			}
			if err := cl.Flush(); err != nil {
				errs <- err
			}
			time.Sleep(time.Second) // let the gateway read the rest before the connection closes
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return burstResult{err: err}
	}
	got, err := b.waitLen(ctx, "push_queue", int64(n), 30*time.Second)
	secs := time.Since(start).Seconds()
	if err != nil {
		return burstResult{err: err}
	}
	seen, err := loadgen.PushEntries(ctx, b.rc, 0, "burst-")
	if err != nil {
		return burstResult{err: err}
	}
	lost, doubled := 0, 0
	for i := range n {
		switch c := seen[strconv.Itoa(i)]; {
		case c == 0:
			lost++
		case c > 1:
			doubled += c - 1
		}
	}
	return burstResult{row: Result{Scenario: "  the burst: MSG_PUSH landing in push_queue", Events: n, Seconds: secs, Lost: lost,
		Note: fmt.Sprintf("%d entries, %d lost, %d doubled", got, lost, doubled)}}
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

func (l *latencies) read(ctx context.Context, frames <-chan imr.Frame) {
	for {
		select {
		case <-ctx.Done():
			return
		case f, ok := <-frames:
			if !ok {
				return
			}
			now := time.Now()
			rt, err := imr.ParseRoute(f.Body)
			if err != nil {
				continue
			}
			m, err := imr.ParseInner(rt.Inner)
			if err != nil || !strings.HasPrefix(m.Content, "lat:") {
				continue
			}
			parts := strings.Split(m.Content, ":")
			i, _ := strconv.Atoi(parts[1])
			ns, _ := strconv.ParseInt(parts[2], 10, 64)
			l.mu.Lock()
			l.seen[i]++
			if i >= 0 && l.seen[i] == 1 {
				l.d = append(l.d, now.Sub(time.Unix(0, ns)))
			}
			l.mu.Unlock()
		}
	}
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
