package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/segmentio/kafka-go"

	"github.com/imstream/imstream/gateway/imr"
	"github.com/imstream/imstream/ingest"
	"github.com/imstream/imstream/internal/plumbing/config"
	"github.com/imstream/imstream/internal/tools/loadgen"
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
// (p99 of ts to its delivery written: only app 7 has deliveries) in each,
// app 8's rate while flooding against its quota, and what each lost once
// app 8's backlog drained. Then the cost of fair share when every app is
// within its quota: the offline path with fair share off and on.
func (b *Bench) Noisy(ctx context.Context) error {
	d, alone, err := b.noisyAlone(ctx)
	if err != nil {
		return err
	}
	for _, mode := range []noisyMode{
		{flood: 10 * noisyQuota, fair: true}, {flood: 10 * noisyQuota}, {flood: 10 * noisyQuota, elsewhere: true},
		{flood: 10 * noisyQuota, gateway: true},
		{backlog: b.o.Events, fair: true}, {backlog: b.o.Events},
		{backlog: b.o.Events, bulk: true, fair: true}, {backlog: b.o.Events, bulk: true},
	} {
		if err := b.noisyAgainst(ctx, d, mode, alone); err != nil {
			return err
		}
	}

	// The cost when every app is within its quota: off and on alternately,
	// the best of three of each (one run swings by 15 % on this machine),
	// of at least a million events each (a run of 200 000 takes a second,
	// and its start-up swings it as much).
	n := max(b.o.Events, 1_000_000)
	gen := func(i int) kafka.Message {
		return kafka.Message{Key: []byte(ingest.UserKey(app, offline(i))), Value: pushEvent(i, "bench")}
	}
	var best [2]Result
	for trial := 1; trial <= baselineTrials; trial++ {
		for k, fair := range []bool{false, true} {
			name := "offline path, fair share off"
			if fair {
				name = "offline path, fair share on (every app within its quota)"
			}
			cfg := b.scenario(fmt.Sprintf("fair share's cost, trial %d: %s", trial, name))
			cfg.Fanout.FairShare.Enabled = fair
			cfg.Fanout.FairShare.DefaultQuota = 10 * n
			if err := b.toPushQueue(ctx, cfg, cfg.Kafka.Topics.Bulk, n, gen, Result{Scenario: name, Events: n}, "fanout", "pusher"); err != nil {
				return err
			}
			r := b.results[len(b.results)-1]
			b.results = b.results[:len(b.results)-1]
			fmt.Fprintf(b.o.Out, "   %d events in %.2fs: %.0f/s\n", r.Events, r.Seconds, r.PerSecond)
			if r.PerSecond > best[k].PerSecond {
				best[k] = r
			}
		}
	}
	best[0].Note = fmt.Sprintf("best of %d trials", baselineTrials)
	best[1].Note = best[0].Note
	best[1].Baseline = best[0].Scenario
	if best[0].PerSecond > 0 {
		best[1].Ratio = best[1].PerSecond / best[0].PerSecond
	}
	b.add(best[0])
	b.add(best[1])
	return nil
}

// noisyAlone runs and records app 7 alone, the baseline of the noisy
// phases, and returns the phases' length.
func (b *Bench) noisyAlone(ctx context.Context) (time.Duration, Result, error) {
	d := min(b.o.Latency, 20*time.Second)
	alone, err := b.noisyPhase(ctx, d, noisyMode{fair: true})
	if err == nil {
		b.add(alone)
	}
	return d, alone, err
}

// noisyAgainst runs mode's phase and records it against alone.
func (b *Bench) noisyAgainst(ctx context.Context, d time.Duration, mode noisyMode, alone Result) error {
	r, err := b.noisyPhase(ctx, d, mode)
	if err != nil {
		return err
	}
	if alone.P99 > 0 {
		r.Ratio = r.P99 / alone.P99
	}
	if alone.ProduceP99 > 0 {
		r.Note = fmt.Sprintf("produce p99 %.2fx alone's; ", r.ProduceP99/alone.ProduceP99) + r.Note
	}
	b.add(r)
	return nil
}

// NoisyDirect: fair share against a flood produced straight to Kafka. App
// 7 sends RT to an online user at 200/s, alone, then while app 8 writes
// up to --events peer messages to offline users to imr.publish as fast as
// one producer goes (quota 1000/s), then beside its two floors in the
// same run: the same flood as MSG_PUSH on the bulk lane routed in full,
// and to a topic nothing reads. App 7's p99 in each, against alone's.
func (b *Bench) NoisyDirect(ctx context.Context) error {
	d, alone, err := b.noisyAlone(ctx)
	if err != nil {
		return err
	}
	for _, mode := range []noisyMode{{direct: b.o.Events, fair: true}, {direct: b.o.Events, bulk: true}, {direct: b.o.Events, elsewhere: true}} {
		if err := b.noisyAgainst(ctx, d, mode, alone); err != nil {
			return err
		}
	}
	return nil
}

// noisyMode is what app 8 does beside app 7: flood events/s for the
// phase's length, over a quota of noisyQuota; or a backlog of that many
// events written at once, without a quota (fair share's share alone); or
// (bulk) that backlog as MSG_PUSH on the bulk lane, over a quota that
// drains it in twice the phase's length (burstQuota), so that the rate app
// 8 is routed at while app 7 runs shows whether it is held to its quota.
//
// elsewhere: the flood goes to a topic no stage reads, so that app 7's
// delay shows what the flood costs it through the broker and the machine
// alone, before any router: the floor of what fair share can reach on the
// machine the bench runs on.
//
// gateway: the flood comes over an imr-protocol connection to a gateway
// that holds app 8 to its quota before Kafka (gateway.quotas; the
// fanout's fair share off); once app 7 has run, the quota is raised (as an
// operator would, by SIGHUP) so that what the gateway held drains.
//
// direct: app 8 produces up to that many peer messages to offline users
// (with bulk: MSG_PUSH on the bulk lane, fair share off — the floor of
// what the same records cost when routed in full; with elsewhere: to a
// topic nothing reads) straight to Kafka, as fast as one producer goes,
// while app 7 runs; with fair, over a quota of noisyQuota. Once app 7 has
// run the quota is raised (an operator's SIGHUP) so that the backlog
// drains.
type noisyMode struct {
	flood, backlog, direct         int
	bulk, fair, elsewhere, gateway bool
}

// noisyPhase runs app 7 at quietRate for d beside app 8 doing mode, on
// fresh topics, and waits for app 8's events to drain.
func (b *Bench) noisyPhase(ctx context.Context, d time.Duration, mode noisyMode) (Result, error) {
	flood, fair := mode.flood, mode.fair
	burstQuota := max(1000, int(float64(mode.backlog)/(2*d.Seconds())))
	name := fmt.Sprintf("noisy: app 7 RT at %d/s alone for %s (fair share on)", quietRate, d)
	switch {
	case mode.direct > 0 && mode.elsewhere:
		name = fmt.Sprintf("noisy direct: app 7 RT at %d/s while app 8 writes up to %d records at full speed to a topic nothing reads, for %s (floor)", quietRate, mode.direct, d)
	case mode.direct > 0 && mode.bulk:
		name = fmt.Sprintf("noisy direct: app 7 RT at %d/s while app 8 writes up to %d MSG_PUSH at full speed to the bulk lane, routed in full, for %s (floor)", quietRate, mode.direct, d)
	case mode.direct > 0:
		name = fmt.Sprintf("noisy direct: app 7 RT at %d/s while app 8 writes up to %d records at full speed to imr.publish, quota %d/s, for %s", quietRate, mode.direct, noisyQuota, d)
	case mode.elsewhere:
		name = fmt.Sprintf("noisy: app 7 RT at %d/s while app 8 writes %d/s to a topic nothing reads, for %s (the broker's and machine's share)", quietRate, flood, d)
	case mode.gateway:
		name = fmt.Sprintf("noisy: app 7 RT at %d/s while app 8 sends %d/s, 10x its quota, through a gateway holding it to its quota before Kafka, for %s", quietRate, flood, d)
	case flood > 0:
		name = fmt.Sprintf("noisy: app 7 RT at %d/s while app 8 sends %d/s, 10x its quota, for %s", quietRate, flood, d)
	case mode.bulk:
		name = fmt.Sprintf("noisy: app 7 RT at %d/s for %s beside app 8's burst of %d MSG_PUSH on the bulk lane (quota %d/s)", quietRate, d, mode.backlog, burstQuota)
	case mode.backlog > 0:
		name = fmt.Sprintf("noisy: app 7 RT at %d/s for %s behind app 8's backlog of %d (no quota; saturated_after 250ms)", quietRate, d, mode.backlog)
	}
	if !fair && !mode.elsewhere && !mode.gateway && mode.direct == 0 {
		name += ", fair share off"
	}
	cfg := b.scenario(name)
	cfg.Fanout.FairShare.Enabled = fair
	roles := []string{"fanout", "pusher"}
	if mode.gateway {
		cfg.Gateway.Quotas.Enabled = true
		cfg.Gateway.Listen = "127.0.0.1:0"
		// The flood is PUBLISH frames of persistent messages to offline
		// users, pushed by docs/protocol.md §4's rules (imr's would push
		// only a MSG_PUSH beside each): its entries are what lands.
		cfg.Gateway.Rules = "imstream"
		roles = append(roles, "gateway")
	}
	if flood > 0 || mode.direct > 0 && fair {
		cfg.Fanout.FairShare.Quotas = map[string]int{strconv.Itoa(noisyApp): noisyQuota}
	}
	switch {
	case mode.bulk && mode.direct == 0:
		cfg.Fanout.FairShare.Quotas = map[string]int{strconv.Itoa(noisyApp): burstQuota}
	case mode.backlog > 0:
		cfg.Fanout.FairShare.SaturatedAfter = 250 * time.Millisecond // holding by share
	}
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
	env, stop, err := b.start(ctx, cfg, roles...)
	if err != nil {
		return out, err
	}
	defer stop()
	if err := b.waitJoined(ctx, env.Metrics); err != nil {
		return out, err
	}
	// Each app writes through its own producer, as two apps' IM servers
	// do: one producer for both would put app 7's records in the same
	// produce requests as the flood's, a queue in the load generator that
	// no router can shorten.
	floodTo := t.Publish
	if mode.elsewhere {
		floodTo = t.Publish + ".elsewhere"
		if err := b.conn.EnsureTopics(ctx, 1, map[string]int{floodTo: cfg.Kafka.Partitions}); err != nil {
			return out, err
		}
	}
	w, wa := b.conn.NewWriter(cfg.Kafka, t.Publish), b.conn.NewWriter(cfg.Kafka, floodTo)
	defer w.Close()
	defer wa.Close()
	var gw *loadgen.Client
	if mode.gateway {
		addr, err := env.Gateway.Addr(ctx)
		if err != nil {
			return out, err
		}
		if gw, err = dialRetry(ctx, addr, "127.0.0.3"); err != nil {
			return out, err
		}
		defer gw.Close()
	}
	m := b.meter()
	switch {
	case mode.direct > 0:
	case mode.bulk:
		if err := b.produce(ctx, t.Bulk, mode.backlog, noisyPush); err != nil {
			return out, err
		}
	case mode.backlog > 0:
		if err := b.produce(ctx, t.Publish, mode.backlog, noisyRecord); err != nil {
			return out, err
		}
	}
	start := time.Now()
	viaGateway := make(chan int, 1)
	if mode.gateway {
		rate := flood
		go func() { viaGateway <- floodGateway(ctx, gw, d, rate) }()
		flood = 0 // not through wa
	}
	viaDirect := make(chan int, 1)
	if mode.direct > 0 {
		to, gen := t.Publish, noisyRecord
		switch {
		case mode.elsewhere:
			to = floodTo
		case mode.bulk:
			to, gen = t.Bulk, noisyPush
		}
		dctx, stopFlood := context.WithTimeout(ctx, d)
		defer stopFlood()
		go func() { viaDirect <- b.floodDirect(dctx, cfg, to, mode.direct, gen) }()
	}
	sentQ, sentA, produced := b.steady(ctx, w, wa, d, quietRate, flood)
	sentA += mode.backlog
	if mode.direct > 0 {
		sentA = <-viaDirect
		if mode.elsewhere {
			sentA = 0 // nothing of app 8's is routed
		}
	}
	if mode.elsewhere {
		sentA = 0 // nothing of app 8's is routed
	}
	took := time.Since(start).Seconds()
	passed := 0
	if mode.gateway {
		passed = b.count(ctx, t.Publish) - sentQ // app 8's records the gateway let into Kafka while app 7 ran
	}
	mfs, _ := env.Registry.Gather()
	routedA := sumCounter(mfs, "imstream_app_events_total", map[string]string{"app": strconv.Itoa(noisyApp), "path": "routed"}) +
		sumCounter(mfs, "imstream_app_events_total", map[string]string{"app": strconv.Itoa(noisyApp), "path": "drained"})
	out = Result{Scenario: name, Events: sentQ}
	if flood > 0 || mode.bulk || mode.gateway || mode.direct > 0 {
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
	mfs, _ = env.Registry.Gather()
	_, out.P99, _ = quantilesOf(mfs, "deliver_topic") // only app 7's events are delivered
	_, handle, _ := histQuantiles(mfs, "imstream_batch_handle_duration_seconds", "stage", "fanout")
	_, produce, _ := histQuantiles(mfs, "imstream_kafka_produce_duration_seconds", "stage", "fanout")
	diag := fmt.Sprintf("; fanout batches (both lanes and the drainer): handled p99 %.1f ms, produce p99 %.1f ms", handle*1000, produce*1000)
	for _, mf := range mfs {
		if mf.GetName() != "imstream_redis_call_duration_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			var op, st string
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "op":
					op = l.GetValue()
				case "stage":
					st = l.GetValue()
				}
			}
			if st == "fanout" && m.GetHistogram().GetSampleCount() > 0 {
				_, p99, _ := histQuantiles([]*dto.MetricFamily{{Name: mf.Name, Metric: []*dto.Metric{m}}}, mf.GetName(), "op", op)
				diag += fmt.Sprintf(", redis %s p99 %.1f ms (%d)", op, p99*1000, m.GetHistogram().GetSampleCount())
			}
		}
	}
	out = b.measure(m, out)
	out.Lost = sentQ - deliveries
	var gwNote string
	if mode.gateway { // the flood's sender may still be blocked by the gateway's backpressure
		sentA = <-viaGateway
		gmf, _ := env.Registry.Gather()
		gwNote = fmt.Sprintf("app 8: %d sent to the gateway, %d passed it while app 7 ran: %.0f/s (quota %d/s: %.2fx), %.0f held, the connection paused %.0f times; ",
			sentA, passed, float64(passed)/took, noisyQuota, float64(passed)/took/noisyQuota,
			sumCounter(gmf, "imstream_gateway_quota_held_total", nil), sumCounter(gmf, "imstream_gateway_quota_paused_total", nil))
		q := cfg.Fanout.FairShare
		q.Quotas = map[string]int{strconv.Itoa(noisyApp): 1_000_000}
		env.Gateway.SetQuotas(q) // the operator's SIGHUP: what it held drains now
	}
	out.ProduceP99 = produced.p99()
	if mode.direct > 0 && fair {
		q := cfg.Fanout.FairShare
		q.Quotas = map[string]int{strconv.Itoa(noisyApp): 10_000_000}
		env.Fanout.SetFairShare(q) // the operator's SIGHUP: the backlog drains now
	}
	if flood > 0 && !fair {
		routedA = float64(sentA) // without fair share the per-app series stay at 0: every event went through at once
	}
	if sentA > 0 {
		drain := 60 * time.Second
		if mode.direct > 0 {
			drain = 10 * time.Minute
		}
		got, err := b.waitLen(ctx, "push_queue", int64(sentA), drain)
		if err != nil {
			return out, err
		}
		out.Note = fmt.Sprintf("app 8: %d sent, all in push lists %.1f s after app 7 began, %d lost", sentA, time.Since(start).Seconds(), sentA-int(got))
		if flood > 0 || mode.direct > 0 && fair {
			out.Note = fmt.Sprintf("app 8: %d sent (%.0f/s), routed at %.0f/s while flooding (quota %d/s: %.2fx), %d lost after its backlog drained",
				sentA, float64(sentA)/took, routedA/took, noisyQuota, routedA/took/noisyQuota, sentA-int(got))
		}
		if mode.direct > 0 && fair {
			out.Note += "; " + b.floodLanded(ctx, sentA)
		}
		if mode.gateway {
			out.Note = gwNote + fmt.Sprintf("%d lost after the quota was raised and it drained", sentA-int(got))
		}
		if mode.bulk && fair {
			out.Note = fmt.Sprintf("app 8: %d sent, routed at %.0f/s while app 7 ran (quota %d/s: %.2fx, with its burst of 1 s), all in push lists %.1f s after app 7 began, %d lost",
				sentA, routedA/took, burstQuota, routedA/took/float64(burstQuota), time.Since(start).Seconds(), sentA-int(got))
		}
	}
	out.Note = fmt.Sprintf("app 7's own records: produce (ts to acknowledged, before any router code) p99 %.1f ms; ", out.ProduceP99*1000) + out.Note + diag
	return out, nil
}

// floodDirect writes up to n of gen's records to topic through a producer
// of its own, as fast as it goes, until ctx ends (a write under way is
// finished, so that what was written is exactly the records 0..sent-1);
// it returns how many were acknowledged.
func (b *Bench) floodDirect(ctx context.Context, cfg config.Config, topic string, n int, gen func(int) kafka.Message) int {
	w := b.conn.NewWriter(cfg.Kafka, topic)
	defer w.Close()
	w.BatchSize = 5000
	sent := 0
	for sent < n && ctx.Err() == nil {
		k := min(5000, n-sent)
		recs := make([]kafka.Message, k)
		for i := range recs {
			recs[i] = gen(sent + i)
		}
		if w.WriteMessages(context.WithoutCancel(ctx), recs...) != nil {
			break
		}
		sent += k
	}
	return sent
}

// floodLanded checks app 8's n peer messages (noisyRecord) in push_queue:
// each once, in each receiver's order.
func (b *Bench) floodLanded(ctx context.Context, n int) string {
	seen := make([]int8, n)
	last := map[int64]int{}
	missing, doubled, order, other := 0, 0, 0, 0
	const chunk = 50_000
	for from := int64(0); ; from += chunk {
		vals, err := b.rc.LRange(ctx, "push_queue", from, from+chunk-1).Result()
		if err != nil {
			return "entries not checked: " + err.Error()
		}
		for _, v := range vals {
			var e struct {
				AppID    int64  `json:"appid"`
				Receiver int64  `json:"receiver"`
				Content  string `json:"content"`
			}
			i, err := -1, json.Unmarshal([]byte(v), &e)
			if c, ok := strings.CutPrefix(e.Content, "flood "); ok && err == nil && e.AppID == noisyApp {
				i, _ = strconv.Atoi(c)
			}
			if i < 0 || i >= n {
				other++
				continue
			}
			if seen[i]++; seen[i] > 1 {
				doubled++
			}
			if l, ok := last[e.Receiver]; ok && i < l {
				order++
			}
			last[e.Receiver] = i
		}
		if len(vals) < chunk {
			break
		}
	}
	for _, c := range seen {
		if c == 0 {
			missing++
		}
	}
	return fmt.Sprintf("its entries checked one by one: %d missing, %d doubled, %d out of their receiver's order, %d others", missing, doubled, order, other)
}

// noisyPush is app 8's i-th MSG_PUSH to an offline user.
func noisyPush(i int) kafka.Message {
	r := offline(i)
	v, _ := json.Marshal(&schemas.Publish{Header: schemas.Header{V: 1, Type: schemas.TypePush, Server: "origin", AppID: noisyApp, TS: time.Now().UnixMilli()},
		Receivers: []int64{r}, Msg: schemas.Message{Cmd: schemas.CmdIM, Sender: 1, Receiver: r, Content: "burst " + strconv.Itoa(i)}})
	return kafka.Message{Key: []byte(ingest.UserKey(noisyApp, r)), Value: v}
}

// noisyRecord is app 8's i-th peer message to an offline user.
func noisyRecord(i int) kafka.Message {
	r := offline(i)
	v, _ := json.Marshal(&schemas.Publish{Header: schemas.Header{V: 1, Type: schemas.TypePublish, Server: "origin", AppID: noisyApp, TS: time.Now().UnixMilli()},
		Receiver: r, Msg: schemas.Message{Cmd: schemas.CmdIM, Sender: 1, Receiver: r, Content: "flood " + strconv.Itoa(i)}})
	return kafka.Message{Key: []byte(ingest.UserKey(noisyApp, r)), Value: v}
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

// steady sends app 7's RT to user 1 at rate through w, and app 8's peer
// messages to offline users at flood (0: none) through wa, for d; it
// returns how many of each it sent, and the produce latencies of app 7's.
func (b *Bench) steady(ctx context.Context, w, wa *kafka.Writer, d time.Duration, rate, flood int) (sent, flooded int, produced *produceTimes) {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	produced = &produceTimes{}
	var writes sync.WaitGroup
	defer writes.Wait()
	seq, fseq := 0, 0
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		<-tick.C
		var batch, fb []kafka.Message
		created := time.Now()
		for k := 0; k < max(rate/100, 1); k++ {
			batch = append(batch, publishRecord(schemas.TypePublish, 1, schemas.Message{Cmd: schemas.CmdIM, Flag: schemas.FlagUnpersistent, Content: strconv.Itoa(seq)}))
			seq++
		}
		for k := 0; k < flood/100; k++ {
			fb = append(fb, noisyRecord(fseq))
			fseq++
		}
		// Written in goroutines, so that the rates hold when one write is slow.
		writes.Add(1)
		go func() {
			defer writes.Done()
			if w.WriteMessages(ctx, batch...) == nil {
				produced.add(created, len(batch), time.Now())
			}
		}()
		if len(fb) > 0 {
			go func() { _ = wa.WriteMessages(ctx, fb...) }()
		}
	}
	return seq, fseq, produced
}

// floodGateway sends app 8's peer messages to offline users over c at rate
// for d, paced by the clock, and returns how many it sent. A gateway that
// stops reading the connection (gateway.quotas.max_held) blocks it: then
// it sends less.
func floodGateway(ctx context.Context, c *loadgen.Client, d time.Duration, rate int) int {
	start := time.Now()
	sent := 0
	for time.Since(start) < d && ctx.Err() == nil {
		due := int(time.Since(start).Seconds() * float64(rate))
		for ; sent < due; sent++ {
			r := offline(sent)
			m := schemas.Message{Cmd: schemas.CmdIM, Sender: 1, Receiver: r, Content: "flood " + strconv.Itoa(sent)}
			if c.Send(imr.CmdPublish, imr.AppendRoute(nil, imr.Route{AppID: noisyApp, Receiver: r, Inner: imr.AppendInner(nil, m)})) != nil {
				return sent
			}
		}
		if c.Flush() != nil {
			return sent
		}
		time.Sleep(10 * time.Millisecond)
	}
	return sent
}

// produceTimes are the produce latencies of app 7's records: from their
// creation (their ts) to their write acknowledged.
type produceTimes struct {
	mu sync.Mutex
	ds []float64 // seconds
}

func (p *produceTimes) add(created time.Time, n int, acked time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for range n {
		p.ds = append(p.ds, acked.Sub(created).Seconds())
	}
}

// p99 is their 99th percentile.
func (p *produceTimes) p99() float64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.ds) == 0 {
		return 0
	}
	sort.Float64s(p.ds)
	return p.ds[min(len(p.ds)-1, len(p.ds)*99/100)]
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
