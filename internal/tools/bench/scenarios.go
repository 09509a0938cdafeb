package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/imstream/imstream/ingest"
	"github.com/imstream/imstream/internal/plumbing/config"
	"github.com/imstream/imstream/internal/plumbing/obs"
	"github.com/imstream/imstream/pusher"
	"github.com/imstream/imstream/schemas"
	"github.com/imstream/imstream/store"
	dto "github.com/prometheus/client_model/go"
)

const app = 7

func (b *Bench) flush(ctx context.Context) error { return b.rc.FlushAll(ctx).Err() }

func (b *Bench) waitLen(ctx context.Context, list string, n int64, idle time.Duration) (int64, error) {
	last, lastChange := int64(-1), time.Now()
	for {
		l, err := b.rc.LLen(ctx, list).Result()
		if err != nil {
			return 0, err
		}
		if l >= n {
			return l, nil
		}
		if l != last {
			last, lastChange = l, time.Now()
		} else if time.Since(lastChange) > idle {
			return l, nil // no progress: report what arrived
		}
		select {
		case <-ctx.Done():
			return l, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func offline(i int) int64 { return int64(50_000_000 + i%200_000) }

func pushEvent(i int, server string) []byte {
	r := offline(i)
	b, _ := json.Marshal(&schemas.Publish{Header: schemas.Header{V: 1, Type: schemas.TypePush, Server: server, AppID: app, TS: time.Now().UnixMilli()},
		Receivers: []int64{r}, Msg: schemas.Message{Cmd: 4, Sender: 1, Receiver: r, Content: "bench " + strconv.Itoa(i)}})
	return b
}

// baselineTrials is how often each baseline is measured; the best trial is
// the ceiling the scenarios are compared with (one trial swung by 4x
// between runs on the shared machine).
const baselineTrials = 3

// Baselines measures raw pipelined RPUSH and raw consume of the same kind
// of data, in this run, on this machine: each the best of baselineTrials.
// Run measures RPUSH again after the scenarios (RPUSHAgain).
func (b *Bench) Baselines(ctx context.Context) error {
	b.scenario(fmt.Sprintf("baseline: raw pipelined RPUSH (1000 per pipeline), best of %d", baselineTrials))
	if err := b.rpush(ctx); err != nil {
		return err
	}
	n := b.o.Events
	cfg := b.scenario(fmt.Sprintf("baseline: raw consume of the same records, best of %d", baselineTrials))
	topic := cfg.Kafka.Topics.Publish
	if err := b.produce(ctx, topic, n, func(i int) kafka.Message {
		return kafka.Message{Key: []byte(ingest.UserKey(app, offline(i))), Value: pushEvent(i, "bench")}
	}); err != nil {
		return err
	}
	_, end, err := b.conn.Offsets(ctx, topic)
	if err != nil {
		return err
	}
	return b.best("raw consume", func() error {
		errs := make(chan error, len(end))
		for p, e := range end {
			go func() {
				r := kafka.NewReader(kafka.ReaderConfig{Brokers: b.cfg.Kafka.Brokers, Dialer: b.conn.Dialer, Topic: topic, Partition: p, MinBytes: 1, MaxBytes: 4 << 20, MaxWait: 50 * time.Millisecond})
				defer r.Close()
				for read := int64(0); read < e; read++ {
					if _, err := r.FetchMessage(ctx); err != nil {
						errs <- err
						return
					}
				}
				errs <- nil
			}()
		}
		for range end {
			if err := <-errs; err != nil {
				return err
			}
		}
		return nil
	})
}

// rpush measures raw pipelined RPUSH of pusher-encoded entries, encoded
// before timing: the baseline is Redis's rate.
func (b *Bench) rpush(ctx context.Context) error {
	n := b.o.Events
	enc := &pusher.Encoder{}
	entries := make([]any, n)
	for i := range entries {
		job := &schemas.PushJob{Header: schemas.Header{AppID: app}, Receivers: []int64{offline(i)}, Msg: schemas.Message{Cmd: 4, Sender: 1, Content: "bench " + strconv.Itoa(i)}}
		entries[i] = enc.Append(nil, job, "t", "", 0, int64(i))[0].Data
	}
	return b.best("raw RPUSH", func() error {
		if err := b.flush(ctx); err != nil {
			return err
		}
		for i := 0; i < n; i += 1000 {
			if err := b.rc.RPush(ctx, "push_queue", entries[i:min(i+1000, n)]...).Err(); err != nil {
				return err
			}
		}
		return nil
	})
}

// RPUSHAgain measures the RPUSH baseline once more after the scenarios; a
// better trial replaces the first and every ratio to it is recomputed, so
// a neighbour's burst during the first trials cannot flatter the ratios.
func (b *Bench) RPUSHAgain(ctx context.Context) error {
	b.scenario(fmt.Sprintf("baseline: raw pipelined RPUSH again, after the scenarios, best of %d", baselineTrials))
	return b.rpush(ctx)
}

// best runs a baseline baselineTrials times and records its fastest trial.
func (b *Bench) best(name string, trial func() error) error {
	var top Result
	prev := -1 // the row of an earlier measurement of this baseline
	for i, r := range b.results {
		if r.Scenario == "baseline: "+name {
			prev, top = i, r
		}
	}
	for t := 0; t < baselineTrials; t++ {
		m := b.meter()
		if err := trial(); err != nil {
			return err
		}
		r := b.measure(m, Result{Scenario: "baseline: " + name, Events: b.o.Events})
		fmt.Fprintf(b.o.Out, "   trial %d: %d events in %.2fs: %.0f/s\n", t+1, r.Events, r.Seconds, r.PerSecond)
		if r.PerSecond > top.PerSecond {
			top = r
		}
	}
	if prev < 0 {
		top.Note = fmt.Sprintf("best of %d trials", baselineTrials)
		b.results = append(b.results, top)
	} else {
		top.Note = fmt.Sprintf("best of %d trials before and %d after the scenarios", baselineTrials, baselineTrials)
		b.results[prev] = top
	}
	b.base[name] = top.PerSecond
	for i := range b.results {
		if r := &b.results[i]; r.Baseline == name {
			r.Ratio = r.PerSecond / top.PerSecond
		}
	}
	return nil
}

// PusherAlone: push jobs already in imr.push → lists.
func (b *Bench) PusherAlone(ctx context.Context) error {
	n := b.o.Events
	cfg := b.scenario("pusher alone: imr.push → lists")
	return b.toPushQueue(ctx, cfg, cfg.Kafka.Topics.Push, n, func(i int) kafka.Message {
		r := offline(i)
		v, _ := json.Marshal(&schemas.PushJob{Header: schemas.Header{V: 1, Type: schemas.TypePushJob, Server: "bench", AppID: app},
			Receivers: []int64{r}, Msg: schemas.Message{Cmd: 4, Sender: 1, Receiver: r, Content: "bench " + strconv.Itoa(i)}})
		return kafka.Message{Key: []byte(strconv.Itoa(i % 64)), Value: v}
	}, Result{Scenario: "pusher alone", Events: n, Baseline: "raw RPUSH"}, "pusher")
}

// OfflinePath: MSG_PUSH events for offline receivers, burst → lists.
func (b *Bench) OfflinePath(ctx context.Context) error {
	n := b.o.Events
	cfg := b.scenario("offline path end to end: push events (bulk lane) → fanout → pusher → lists")
	return b.toPushQueue(ctx, cfg, cfg.Kafka.Topics.Bulk, n, func(i int) kafka.Message {
		return kafka.Message{Key: []byte(ingest.UserKey(app, offline(i))), Value: pushEvent(i, "bench")}
	}, Result{Scenario: "offline path end to end", Events: n, Baseline: "raw RPUSH"}, "fanout", "pusher")
}

// toPushQueue produces n records made by gen to topic on an empty Redis,
// runs roles until push_queue holds n entries (or stops growing for 30 s),
// and records res measured until then, with the entries lost, and those
// doubled half a second later (late doubles would show by then; the wait
// is not measured).
func (b *Bench) toPushQueue(ctx context.Context, cfg config.Config, topic string, n int, gen func(i int) kafka.Message, res Result, roles ...string) error {
	if err := b.flush(ctx); err != nil {
		return err
	}
	if err := b.produce(ctx, topic, n, gen); err != nil {
		return err
	}
	m := b.meter()
	_, stop, err := b.start(ctx, cfg, roles...)
	if err != nil {
		return err
	}
	defer stop()
	got, err := b.waitLen(ctx, "push_queue", int64(n), 30*time.Second)
	if err != nil {
		return err
	}
	res.Lost = n - int(got)
	res = b.measure(m, res)
	time.Sleep(500 * time.Millisecond)
	if final := b.rc.LLen(ctx, "push_queue").Val(); final > int64(n) {
		res.Note = fmt.Sprintf("%d entries doubled", final-int64(n))
	}
	b.add(res)
	return nil
}

// applyPresence fills the presence store directly (setup, not measured).
func (b *Bench) applyPresence(ctx context.Context, users []int64, servers int) (store.PresenceStore, error) {
	ps := store.NewRedisPresence(b.rc, b.cfg.Redis.KeyPrefix, b.cfg.Presence.Lease, 0)
	now := time.Now()
	var evs []*schemas.Presence
	on := true
	for s := 0; s < servers; s++ {
		evs = append(evs, &schemas.Presence{Header: schemas.Header{Type: schemas.TypeServerUp, Server: "s" + strconv.Itoa(s), AppID: app, TS: now.UnixMilli()}, Epoch: 1})
	}
	for i, u := range users {
		evs = append(evs, &schemas.Presence{Header: schemas.Header{Type: schemas.TypeSubscribe, Server: "s" + strconv.Itoa(i%servers), AppID: app}, Epoch: 1, UID: u, Online: &on})
		if len(evs) == 10_000 {
			if err := ps.Apply(ctx, evs, now); err != nil {
				return nil, err
			}
			evs = evs[:0]
		}
	}
	return ps, ps.Apply(ctx, evs, now)
}

// OnlinePeers: 100k present users over 8 servers; unpersistent peer
// messages → deliver topics.
func (b *Bench) OnlinePeers(ctx context.Context) error {
	n := b.o.Events / 2
	cfg := b.scenario("online peers: 100k users on 8 servers, RT → deliver topics")
	if err := b.flush(ctx); err != nil {
		return err
	}
	users := make([]int64, 100_000)
	for i := range users {
		users[i] = int64(i + 1)
	}
	if _, err := b.applyPresence(ctx, users, 8); err != nil {
		return err
	}
	topics := map[string]int{}
	for s := 0; s < 8; s++ {
		topics[cfg.Kafka.Topics.DeliverPrefix+"s"+strconv.Itoa(s)] = cfg.Kafka.DeliverPartitions
	}
	if err := b.conn.EnsureTopics(ctx, 1, topics); err != nil {
		return err
	}
	return b.consumeAll(ctx, cfg, "fanout", cfg.Fanout.Group, cfg.Kafka.Topics.Publish, n, func(i int) kafka.Message {
		return publishRecord(schemas.TypePublish, users[(i*7919)%len(users)], schemas.Message{Cmd: schemas.CmdRT, Content: "typing"})
	}, Result{Scenario: "online peers", Events: n, Baseline: "raw consume"})
}

// Groups: 1000 groups × 1000 members, 10% online; GROUP_IM → group push
// entries. Reports member decisions per second.
func (b *Bench) Groups(ctx context.Context) error {
	const groups, members = 1000, 1000
	events := max(b.o.Events/200, 1000)
	cfg := b.scenario(fmt.Sprintf("groups: %d groups × %d members, 10%% online, %d GROUP_IM", groups, members, events))
	if err := b.flush(ctx); err != nil {
		return err
	}
	gs := store.NewRedisGroups(b.rc, b.cfg.Redis.KeyPrefix, 0)
	var online []int64
	for g := 1; g <= groups; g++ {
		ms := make([]int64, members)
		for k := range ms {
			ms[k] = int64(1 + (g*members+k*7)%200_000)
		}
		if err := gs.Apply(ctx, []*schemas.Group{{Header: schemas.Header{Type: schemas.TypeGroupCreate, AppID: app}, GroupID: int64(g), Members: ms}}); err != nil {
			return err
		}
	}
	for u := int64(10); u <= 200_000; u += 10 {
		online = append(online, u)
	}
	if _, err := b.applyPresence(ctx, online, 8); err != nil {
		return err
	}
	return b.consumeAll(ctx, cfg, "fanout", cfg.Fanout.Group, cfg.Kafka.Topics.Publish, events, func(i int) kafka.Message {
		return publishRecord(schemas.TypePublishGroup, int64(1+i%groups), schemas.Message{Cmd: schemas.CmdGroupIM, Content: "hi group"})
	}, Result{Scenario: "groups (member decisions)", Events: events * members,
		Note: fmt.Sprintf("%d GROUP_IM events; events column counts member decisions", events)})
}

// PresenceChurn: subscribe/unsubscribe storm → presence store.
func (b *Bench) PresenceChurn(ctx context.Context) error {
	n := b.o.Events / 2
	cfg := b.scenario("presence churn: subscribe/unsubscribe storm")
	if err := b.flush(ctx); err != nil {
		return err
	}
	on := true
	return b.consumeAll(ctx, cfg, "presence", cfg.Presence.Group, cfg.Kafka.Topics.Presence, n, func(i int) kafka.Message {
		u := int64(1 + i/2%100_000)
		ev := &schemas.Presence{Header: schemas.Header{V: 1, Type: schemas.TypeSubscribe, Server: "s" + strconv.Itoa(int(u%8)), AppID: app}, Epoch: 1, UID: u, Online: &on}
		if i%2 == 1 {
			ev.Type, ev.Online = schemas.TypeUnsubscribe, nil
		}
		v, _ := json.Marshal(ev)
		return kafka.Message{Key: []byte(ingest.UserKey(app, u)), Value: v}
	}, Result{Scenario: "presence churn", Events: n, Baseline: "raw consume"})
}

// Latency: a steady rate of MSG_PUSH for offline users; e2e latency from
// the event's ts to the push-list write, from the pusher's histogram.
func (b *Bench) Latency(ctx context.Context) error {
	cfg := b.scenario(fmt.Sprintf("latency: steady %d events/s for %s", b.o.Rate, b.o.Latency))
	if err := b.flush(ctx); err != nil {
		return err
	}
	if err := b.conn.EnsureTopics(ctx, 1, map[string]int{cfg.Kafka.Topics.Publish: cfg.Kafka.Partitions, cfg.Kafka.Topics.Push: cfg.Kafka.Partitions}); err != nil {
		return err
	}
	env, stop, err := b.start(ctx, cfg, "fanout", "pusher")
	if err != nil {
		return err
	}
	defer stop()
	if err := b.waitJoined(ctx, env.Metrics); err != nil {
		return err
	}
	w := b.conn.NewWriter(cfg.Kafka, cfg.Kafka.Topics.Publish)
	defer w.Close()
	m := b.meter()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	per := max(b.o.Rate/100, 1)
	sent := 0
	end := time.Now().Add(b.o.Latency)
	for time.Now().Before(end) {
		<-tick.C
		batch := make([]kafka.Message, per)
		for k := range batch {
			batch[k] = kafka.Message{Key: []byte(ingest.UserKey(app, offline(sent))), Value: pushEvent(sent, "bench")}
			sent++
		}
		go func() { _ = w.WriteMessages(ctx, batch...) }() // keep the rate even when one write is slow
	}
	got, err := b.waitLen(ctx, "push_queue", int64(sent), 30*time.Second)
	if err != nil {
		return err
	}
	r := Result{Scenario: "latency (steady rate)", Events: sent, Lost: sent - int(got)}
	r.P50, r.P99, r.P999 = quantiles(env.Registry, "push_list")
	b.record(m, r)
	b.results[len(b.results)-1].PerSecond = float64(sent) / b.o.Latency.Seconds()
	return nil
}

func (b *Bench) waitJoined(ctx context.Context, m *obs.Metrics) error {
	for !m.Joined("fanout") || !m.Joined("pusher") {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// quantiles reads p50/p99/p999 of imstream_e2e_latency_seconds{sink} with
// linear interpolation inside buckets (as histogram_quantile does).
func quantiles(reg *obs.Registry, sink string) (p50, p99, p999 float64) {
	mfs, _ := reg.Gather()
	return quantilesOf(mfs, sink)
}

// quantilesOf is quantiles over gathered or scraped metric families.
func quantilesOf(mfs []*dto.MetricFamily, sink string) (p50, p99, p999 float64) {
	return histQuantiles(mfs, "imstream_e2e_latency_seconds", "sink", sink)
}

// histQuantiles is quantiles of histogram name's series whose label has
// value.
func histQuantiles(mfs []*dto.MetricFamily, name, label, value string) (p50, p99, p999 float64) {
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			ok := false
			for _, l := range m.GetLabel() {
				ok = ok || (l.GetName() == label && l.GetValue() == value)
			}
			if !ok {
				continue
			}
			h := m.GetHistogram()
			bs := h.GetBucket()
			sort.Slice(bs, func(i, j int) bool { return bs[i].GetUpperBound() < bs[j].GetUpperBound() })
			total := float64(h.GetSampleCount())
			q := func(p float64) float64 {
				rank, prevB, prevC := p*total, 0.0, 0.0
				for _, bk := range bs {
					c := float64(bk.GetCumulativeCount())
					if c >= rank {
						ub := bk.GetUpperBound()
						if math.IsInf(ub, 1) {
							return prevB
						}
						return prevB + (ub-prevB)*(rank-prevC)/max(c-prevC, 1)
					}
					prevB, prevC = bk.GetUpperBound(), c
				}
				return prevB
			}
			return q(0.5), q(0.99), q(0.999)
		}
	}
	return 0, 0, 0
}

// consumeAll produces n records made by gen to topic, then runs role alone
// until its group has consumed them, measuring from before it starts, and
// records the measure as res.
func (b *Bench) consumeAll(ctx context.Context, cfg config.Config, role, group, topic string, n int, gen func(i int) kafka.Message, res Result) error {
	if err := b.produce(ctx, topic, n, gen); err != nil {
		return err
	}
	m := b.meter()
	_, stop, err := b.start(ctx, cfg, role)
	if err != nil {
		return err
	}
	defer stop()
	if err := b.waitLag(ctx, group, topic, n); err != nil {
		return err
	}
	b.record(m, res)
	return nil
}

// publishRecord is a publish event of type typ (publish or publish_group)
// from sender 1 to receiver, keyed as the ingest library keys it.
func publishRecord(typ schemas.Type, receiver int64, m schemas.Message) kafka.Message {
	key := ingest.UserKey(app, receiver)
	if typ == schemas.TypePublishGroup {
		key = ingest.GroupKey(app, receiver)
	}
	m.Sender, m.Receiver = 1, receiver
	v, _ := json.Marshal(&schemas.Publish{Header: schemas.Header{V: 1, Type: typ, Server: "origin", AppID: app, TS: time.Now().UnixMilli()},
		Receiver: receiver, Msg: m})
	return kafka.Message{Key: []byte(key), Value: v}
}
