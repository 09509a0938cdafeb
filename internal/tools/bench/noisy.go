package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/segmentio/kafka-go"

	"github.com/imstream/imstream/ingest"
	"github.com/imstream/imstream/schemas"
)

// The noisy scenario's apps, rates and quota.
const (
	noisyApp   = 8    // floods peer messages to offline users
	noisyQuota = 1000 // its quota, events/s on the online lane
	quietRate  = 200  // app (7): RT to an online user, events/s
)

// Noisy: fair share under a flood. App 7 sends RT to an online user at
// 200/s, first alone, then while app 8 sends peer messages to offline users
// at 10× its quota (1000/s) on the same lane and partitions; fair share is
// on, each phase on its own topics and processes. It reports app 7's delay
// (p99 of the fanout's per-app histogram: event ts to routed) in both,
// app 8's rate while flooding against its quota, and what each lost once
// app 8's backlog drained. Then the cost of fair share when every app is
// within its quota: the offline path with fair share off and on.
func (b *Bench) Noisy(ctx context.Context) error {
	d := min(b.o.Latency, 20*time.Second)
	alone, err := b.noisyPhase(ctx, d, 0)
	if err != nil {
		return err
	}
	b.add(alone)
	flood, err := b.noisyPhase(ctx, d, 10*noisyQuota)
	if err != nil {
		return err
	}
	if alone.P99 > 0 {
		flood.Ratio = flood.P99 / alone.P99
	}
	b.add(flood)

	// The cost when every app is within its quota.
	n := b.o.Events
	gen := func(i int) kafka.Message {
		return kafka.Message{Key: []byte(ingest.UserKey(app, offline(i))), Value: pushEvent(i, "bench")}
	}
	off := b.scenario("fair share's cost: offline path, fair share off")
	if err := b.toPushQueue(ctx, off, off.Kafka.Topics.Bulk, n, gen, Result{Scenario: "offline path, fair share off", Events: n}, "fanout", "pusher"); err != nil {
		return err
	}
	base := b.results[len(b.results)-1].PerSecond
	on := b.scenario("fair share's cost: offline path, fair share on, every app within its quota")
	on.Fanout.FairShare.Enabled = true
	on.Fanout.FairShare.DefaultQuota = 10 * n
	if err := b.toPushQueue(ctx, on, on.Kafka.Topics.Bulk, n, gen, Result{Scenario: "offline path, fair share on (within quota)", Events: n, Baseline: "fair share off"}, "fanout", "pusher"); err != nil {
		return err
	}
	if base > 0 {
		b.results[len(b.results)-1].Ratio = b.results[len(b.results)-1].PerSecond / base
	}
	return nil
}

// noisyPhase runs app 7 at quietRate for d, with app 8 at flood events/s
// (0: none), on fresh topics with fair share on, and waits for app 8's
// backlog to drain.
func (b *Bench) noisyPhase(ctx context.Context, d time.Duration, flood int) (Result, error) {
	name := fmt.Sprintf("noisy: app 7 RT at %d/s alone for %s (fair share on)", quietRate, d)
	if flood > 0 {
		name = fmt.Sprintf("noisy: app 7 RT at %d/s while app 8 sends %d/s, 10x its quota, for %s", quietRate, flood, d)
	}
	cfg := b.scenario(name)
	cfg.Fanout.FairShare.Enabled = true
	cfg.Fanout.FairShare.Quotas = map[string]int{strconv.Itoa(noisyApp): noisyQuota}
	var out Result
	if err := b.flush(ctx); err != nil {
		return out, err
	}
	if _, err := b.applyPresence(ctx, []int64{1}, 1); err != nil {
		return out, err
	}
	t := cfg.Kafka.Topics
	if err := b.conn.EnsureTopics(ctx, 1, map[string]int{t.Publish: cfg.Kafka.Partitions, t.Bulk: cfg.Kafka.Partitions, t.Push: cfg.Kafka.Partitions,
		t.Spill: cfg.Kafka.Partitions, t.DeliverPrefix + "s0": cfg.Kafka.DeliverPartitions}); err != nil {
		return out, err
	}
	env, stop, err := b.start(ctx, cfg, "fanout", "pusher")
	if err != nil {
		return out, err
	}
	defer stop()
	if err := b.waitJoined(ctx, env.Metrics); err != nil {
		return out, err
	}
	w := b.conn.NewWriter(cfg.Kafka, t.Publish)
	defer w.Close()
	m := b.meter()
	start := time.Now()
	sentQ, sentA := b.steady(ctx, w, d, quietRate, flood)
	took := time.Since(start).Seconds()
	mfs, _ := env.Registry.Gather()
	routedA := sumCounter(mfs, "imstream_app_events_total", map[string]string{"app": strconv.Itoa(noisyApp), "path": "routed"}) +
		sumCounter(mfs, "imstream_app_events_total", map[string]string{"app": strconv.Itoa(noisyApp), "path": "drained"})
	out = Result{Scenario: name, Events: sentQ}
	if flood > 0 {
		out.Baseline = "app 7 alone"
	}
	// App 7's deliveries, all of them.
	deliveries := 0
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if deliveries = b.count(ctx, t.DeliverPrefix+"s0"); deliveries >= sentQ {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	_, out.P99, _ = histQuantiles(mfs, "imstream_app_delay_seconds", "app", strconv.Itoa(app))
	out = b.measure(m, out)
	out.Lost = sentQ - deliveries
	if flood > 0 {
		got, err := b.waitLen(ctx, "push_queue", int64(sentA), 60*time.Second)
		if err != nil {
			return out, err
		}
		out.Note = fmt.Sprintf("app 8: %d sent, routed at %.0f/s while flooding (quota %d/s: %.2fx), %d lost after its backlog drained",
			sentA, routedA/took, noisyQuota, routedA/took/noisyQuota, sentA-int(got))
	}
	return out, nil
}

// count is the number of records in topic.
func (b *Bench) count(ctx context.Context, topic string) int {
	first, end, err := b.conn.Offsets(ctx, topic)
	if err != nil {
		return 0
	}
	n := 0
	for p, e := range end {
		n += int(e - first[p])
	}
	return n
}

// steady sends app 7's RT to user 1 at rate, and app 8's peer messages to
// offline users at flood (0: none), for d; it returns how many of each it
// sent.
func (b *Bench) steady(ctx context.Context, w *kafka.Writer, d time.Duration, rate, flood int) (sent, flooded int) {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	seq, fseq := 0, 0
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		<-tick.C
		var batch []kafka.Message
		for k := 0; k < max(rate/100, 1); k++ {
			batch = append(batch, publishRecord(schemas.TypePublish, 1, schemas.Message{Cmd: schemas.CmdIM, Flag: schemas.FlagUnpersistent, Content: strconv.Itoa(seq)}))
			seq++
		}
		for k := 0; k < flood/100; k++ {
			r := offline(fseq)
			v, _ := json.Marshal(&schemas.Publish{Header: schemas.Header{V: 1, Type: schemas.TypePublish, Server: "origin", AppID: noisyApp, TS: time.Now().UnixMilli()},
				Receiver: r, Msg: schemas.Message{Cmd: schemas.CmdIM, Sender: 1, Receiver: r, Content: "flood " + strconv.Itoa(fseq)}})
			batch = append(batch, kafka.Message{Key: []byte(ingest.UserKey(noisyApp, r)), Value: v})
			fseq++
		}
		go func() { _ = w.WriteMessages(ctx, batch...) }() // keep the rate even when one write is slow
	}
	return seq, fseq
}

// sumCounter sums counter name's series that have every label of match.
func sumCounter(mfs []*dto.MetricFamily, name string, match map[string]string) float64 {
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for k, v := range match {
				if have[k] != v {
					continue series
				}
			}
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}
