package gateway

import (
	"math"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/imstream/imstream/ingest"
	"github.com/imstream/imstream/internal/plumbing/config"
	"github.com/imstream/imstream/internal/plumbing/obs"
)

// Quotas at the gateway (docs/lanes.md). With gateway.quotas.enabled each
// app's publish and push events pass the gateway at most at the app's quota
// (fanout.fair_share's, times gateway.quotas.scale) per lane, counted in
// this process. An event over the quota is held in its connection's
// memory, behind the app's earlier held events of that connection and
// lane, and queued for Kafka in that order as tokens come; the connection's
// other events (other apps, presence, heartbeats) go on meanwhile. So a
// flood through this gateway never reaches the brokers faster than its
// app's quota, and nothing is dropped:
//
//   - at gateway.quotas.max_held events held in the gateway (all
//     connections together: a bound on its memory) a connection that would
//     hold one more is not read until one is released (TCP backpressure,
//     as with a full queue: that whole IM server waits, counted); a
//     connection whose apps are within their quotas holds nothing and is
//     never stopped by it;
//   - a connection that ends queues what it held at once, without waiting
//     for tokens (the fanout's quota still applies), before server_down.
//
// Order: per app and lane as read; across apps and lanes an event of a
// held app goes after later events of others, which only the order of
// different receivers' messages sees.

// laneKey is one app's events of one lane.
type laneKey struct {
	app  int64
	bulk bool
}

func (k laneKey) lane() string {
	if k.bulk {
		return "bulk"
	}
	return "online"
}

// limiter is this gateway's token buckets, one per app and lane with a
// quota.
type limiter struct {
	now func() time.Time

	mu      sync.Mutex
	cfg     config.FairShare
	scale   float64
	buckets map[laneKey]*bucket
	swept   time.Time
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newLimiter(cfg config.FairShare, scale float64, now func() time.Time) *limiter {
	return &limiter{now: now, cfg: cfg, scale: scale, buckets: map[laneKey]*bucket{}, swept: now()}
}

// setConfig replaces the quotas (a reload); the buckets keep their tokens.
func (l *limiter) setConfig(cfg config.FairShare) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cfg = cfg
}

// take takes up to n tokens of k's quota and returns how many it got, and
// when it got fewer, how long until the next one is there. An app without
// a quota gets all n.
func (l *limiter) take(k laneKey, n int) (int, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if now.Sub(l.swept) >= 10*time.Second {
		l.sweep(now)
	}
	rate := float64(l.cfg.Quota(k.app)) * l.scale
	if rate <= 0 {
		delete(l.buckets, k)
		return n, 0
	}
	depth := math.Max(1, rate*l.cfg.Burst.Seconds())
	b := l.buckets[k]
	if b == nil {
		b = &bucket{tokens: depth, last: now}
		l.buckets[k] = b
	}
	if now.After(b.last) {
		b.tokens = math.Min(depth, b.tokens+now.Sub(b.last).Seconds()*rate)
		b.last = now
	}
	got := min(n, int(b.tokens))
	b.tokens -= float64(got)
	if got == n {
		return got, 0
	}
	return got, time.Duration(math.Ceil((1 - b.tokens) / rate * float64(time.Second)))
}

// step is the shortest wait between two releases of a connection's held
// events: a few events at a time rather than one per token, but well
// within a burst (a longer wait would lose tokens to the bucket's depth).
func (l *limiter) step() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return min(5*time.Millisecond, l.cfg.Burst/2)
}

// sweep forgets the buckets that have refilled: they would start full.
func (l *limiter) sweep(now time.Time) {
	for k, b := range l.buckets {
		rate := float64(l.cfg.Quota(k.app)) * l.scale
		if rate <= 0 || b.tokens+now.Sub(b.last).Seconds()*rate >= math.Max(1, rate*l.cfg.Burst.Seconds()) {
			delete(l.buckets, k)
		}
	}
	l.swept = now
}

// quotaMetrics are the gateway's quota series.
type quotaMetrics struct {
	held    *prometheus.CounterVec // {app, lane}
	holding prometheus.Gauge
	paused  prometheus.Counter
	flushed prometheus.Counter
	top     *obs.TopApps
}

func newQuotaMetrics(top int) *quotaMetrics {
	m := &quotaMetrics{
		held: obs.CounterVec("imstream_gateway_quota_held_total",
			"Events that waited in the gateway for their app's quota, by app (the top apps by events held, the rest as other) and lane.", "app", "lane"),
		holding: obs.Gauge("imstream_gateway_quota_holding", "Events held by quota in this gateway now, on all connections."),
		paused: obs.Counter("imstream_gateway_quota_paused_total",
			"Times a connection's reading stopped because gateway.quotas.max_held events were held in the gateway."),
		flushed: obs.Counter("imstream_gateway_quota_flushed_total",
			"Held events queued for Kafka without waiting for their quota because their connection ended."),
	}
	m.top = obs.NewTopApps(top, time.Now, m.held)
	for _, lane := range []string{"online", "bulk"} {
		m.held.WithLabelValues(obs.Other, lane)
	}
	return m
}

func (m *quotaMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.held, m.holding, m.paused, m.flushed}
}

// budget bounds the events held in the gateway, all connections together.
type budget struct {
	mu   sync.Mutex
	n    int
	max  int
	room chan struct{} // closed when n drops below max while a reader waits
}

// take counts one more event held, waiting while max are (until done:
// then it counts it beyond max); paused is called when it begins to wait.
func (b *budget) take(done <-chan struct{}, paused func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.n >= b.max {
		paused()
	}
	for b.n >= b.max {
		select {
		case <-done:
			b.n++
			return
		default:
		}
		if b.room == nil {
			b.room = make(chan struct{})
		}
		room := b.room
		b.mu.Unlock()
		select {
		case <-room:
		case <-done:
		}
		b.mu.Lock()
	}
	b.n++
}

// give returns n events' room.
func (b *budget) give(n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.n -= n
	if b.room != nil && b.n < b.max {
		close(b.room)
		b.room = nil
	}
}

// holding is one connection's events held by quota.
type holding struct {
	c *conn

	mu      sync.Mutex
	queues  map[laneKey]*heldQueue
	n       int           // events held
	wake    chan struct{} // a new queue, or the end: the releaser looks again
	closing bool          // the connection ended: release everything now
	started bool
	done    chan struct{} // the releaser ended
}

// heldQueue is one app's held events of one lane, in order.
type heldQueue struct {
	msgs []kafka.Message
	out  chan kafka.Message // the lane's queue
}

func newHolding(c *conn) *holding {
	return &holding{c: c, queues: map[laneKey]*heldQueue{}, wake: make(chan struct{}, 1), done: make(chan struct{})}
}

// send queues r (an event of k) for Kafka as conn.send does, or holds it:
// while the app has held events of that lane on this connection, or no
// token of its quota. To hold it, it waits while the gateway holds
// max_held events (until the connection ends: then r is held beyond, to
// be flushed with the rest). It returns false as conn.send does.
func (h *holding) send(k laneKey, r ingest.Record) bool {
	c := h.c
	h.mu.Lock()
	q := h.queues[k]
	h.mu.Unlock() // only this goroutine adds events; the releaser may empty q meanwhile
	if q == nil {
		if got, _ := c.g.limit.take(k, 1); got == 1 {
			return c.send(r)
		}
	}
	out, m := c.lane(r), r.Message()
	c.g.queued.Add(1)
	c.g.held.take(c.ctx.Done(), c.g.qm.paused.Inc)
	h.mu.Lock()
	if q = h.queues[k]; q == nil { // none, or all its events released meanwhile
		q = &heldQueue{out: out}
		h.queues[k] = q
		if !h.started {
			h.started = true
			go h.release()
		}
		h.signal()
	}
	q.msgs = append(q.msgs, m)
	h.n++
	h.mu.Unlock()
	c.g.qm.holding.Inc()
	c.g.qm.held.WithLabelValues(c.g.qm.top.Label(k.app, 1), k.lane()).Inc()
	return true
}

func (h *holding) signal() {
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

// end makes the releaser queue everything held at once, and waits for it.
func (h *holding) end() {
	h.mu.Lock()
	h.closing = true
	started := h.started
	h.mu.Unlock()
	if !started {
		return
	}
	h.signal()
	<-h.done
}

// release queues held events for Kafka as their apps' tokens come, each
// app's in order, until the connection ended and nothing is held.
func (h *holding) release() {
	defer close(h.done)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		h.mu.Lock()
		closing := h.closing
		if closing && len(h.queues) == 0 {
			h.mu.Unlock()
			return
		}
		type batch struct {
			k    laneKey
			q    *heldQueue
			msgs []kafka.Message
		}
		var ready []batch
		wait := time.Duration(-1)
		for k, q := range h.queues {
			n := len(q.msgs)
			if !closing {
				var next time.Duration
				n, next = h.c.g.limit.take(k, n)
				if n < len(q.msgs) && (wait < 0 || next < wait) {
					wait = next
				}
			}
			if n > 0 {
				// The reader only appends to q.msgs: these stay as they are.
				ready = append(ready, batch{k, q, q.msgs[:n:n]})
			}
		}
		h.mu.Unlock()
		for _, b := range ready {
			if !h.queue(b.msgs, b.q.out, closing) {
				return
			}
			h.mu.Lock()
			b.q.msgs = b.q.msgs[len(b.msgs):]
			if len(b.q.msgs) == 0 {
				delete(h.queues, b.k)
			}
			h.n -= len(b.msgs)
			h.mu.Unlock()
			h.c.g.held.give(len(b.msgs))
			h.c.g.qm.holding.Sub(float64(len(b.msgs)))
		}
		if len(ready) > 0 {
			continue
		}
		if wait < 0 {
			wait = time.Hour // nothing held: until the reader holds something
		}
		wait = max(wait, h.c.g.limit.step())
		timer.Reset(wait)
		select {
		case <-h.wake:
		case <-timer.C:
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

// queue hands msgs to the lane's producer, in order; false when the
// producers gave up meanwhile (the connection closed and Kafka stayed
// unreachable): then every event still held is counted lost.
func (h *holding) queue(msgs []kafka.Message, out chan kafka.Message, flushed bool) bool {
	for i, m := range msgs {
		select {
		case out <- m:
			if flushed {
				h.c.g.qm.flushed.Inc()
			}
		case <-h.c.pctx.Done():
			h.mu.Lock()
			held := h.n
			n := held - i // the first i of msgs are the producer's now
			h.queues, h.n = map[laneKey]*heldQueue{}, 0
			h.mu.Unlock()
			h.c.g.held.give(held)
			h.c.g.queued.Add(-int64(n))
			h.c.g.qm.holding.Sub(float64(held))
			h.c.lost(n, "held events not queued: Kafka unreachable and the queue full until the give-up time", h.c.pctx.Err())
			return false
		}
	}
	return true
}
