package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/imstream/imstream/ingest"
	"github.com/imstream/imstream/internal/plumbing/kafkax"
	"github.com/imstream/imstream/schemas"
	"github.com/imstream/imstream/store"
)

// BigGroup: a group of 100 000 members, 10 % online on three servers; 20
// GROUP_IM sent at once while RT messages flow at 200/s to online users,
// half of them keyed onto the group's own partition. `imstream all` runs as
// a process of its own (its RSS is the roles'). One row per uid length:
// 7 digits and 19 (snowflake ids).
func (b *Bench) BigGroup(ctx context.Context) error {
	for _, base := range []int64{1_000_000, 1_000_000_000_000_000_000} {
		if err := b.bigGroup(ctx, base); err != nil {
			return err
		}
	}
	return nil
}

func (b *Bench) bigGroup(ctx context.Context, base int64) error {
	const members, messages, gid = 100_000, 20, 9000
	digits := len(strconv.FormatInt(base, 10))
	cfg := b.scenario(fmt.Sprintf("big group: %d members (%d-digit uids), 10%% online on 3 servers, %d GROUP_IM at once, RT at 200/s",
		members, digits, messages))
	if err := b.flush(ctx); err != nil {
		return err
	}
	ms := make([]int64, members)
	var online []int64
	for i := range ms {
		ms[i] = base + int64(i)*7
		if i%10 == 0 {
			online = append(online, ms[i])
		}
	}
	gs := store.NewRedisGroups(b.rc, b.cfg.Redis.KeyPrefix, 0)
	if err := gs.Apply(ctx, []*schemas.Group{{Header: schemas.Header{Type: schemas.TypeGroupCreate, AppID: app}, GroupID: gid, Members: ms}}); err != nil {
		return err
	}
	if _, err := b.applyPresence(ctx, online, 3); err != nil {
		return err
	}
	t := cfg.Kafka.Topics
	topics := map[string]int{t.Publish: cfg.Kafka.Partitions, t.Push: cfg.Kafka.Partitions}
	for s := 0; s < 3; s++ {
		topics[t.DeliverPrefix+"s"+strconv.Itoa(s)] = cfg.Kafka.DeliverPartitions
	}
	if err := b.conn.EnsureTopics(ctx, 1, topics); err != nil {
		return err
	}
	all, err := b.startChild(cfg, "all")
	if err != nil {
		return err
	}
	defer all.stop()
	if err := waitReady(ctx, all.admin); err != nil {
		return err
	}

	// RT receivers: online users keyed onto the group's partition, and others.
	gp := kafkax.PartitionFor([]byte(ingest.GroupKey(app, gid)), cfg.Kafka.Partitions)
	var own, other []int64
	for _, u := range online {
		if kafkax.PartitionFor([]byte(ingest.UserKey(app, u)), cfg.Kafka.Partitions) == gp {
			own = append(own, u)
		} else {
			other = append(other, u)
		}
	}
	w := kafkax.NoLinger(b.conn.NewWriter(cfg.Kafka, t.Publish))
	defer w.Close()
	rtCtx, stopRT := context.WithCancel(ctx)
	rtDone := make(chan int)
	go func() {
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		n := 0
		for rtCtx.Err() == nil {
			<-tick.C
			to, class := other[n%len(other)], "other"
			if n%2 == 0 {
				to, class = own[n%len(own)], "own"
			}
			_ = w.WriteMessages(rtCtx, publishRecord(schemas.TypePublish, to, schemas.Message{Cmd: schemas.CmdRT, Content: class}))
			n++
		}
		rtDone <- n
	}()
	time.Sleep(time.Second) // RT flowing before the burst

	m := b.meter()
	cpu0 := all.cpu()
	start := time.Now()
	burst := make([]kafka.Message, messages)
	for k := range burst {
		burst[k] = publishRecord(schemas.TypePublishGroup, gid, schemas.Message{Cmd: schemas.CmdGroupIM, Content: "big " + strconv.Itoa(k)})
	}
	if err := kafkax.Write(ctx, w, burst...); err != nil {
		stopRT()
		return err
	}
	want := messages * (members - len(online)) // the sender (1) is not a member
	got, entries, err := b.countReceivers(ctx, "group_push_queue", want, 2*time.Minute)
	took := time.Since(start)
	time.Sleep(time.Second)
	stopRT()
	sent := <-rtDone
	if err != nil {
		return err
	}
	lat, err := b.deliverLatencies(ctx, t.DeliverPrefix, 3)
	if err != nil {
		return err
	}
	r := b.measure(m, Result{Scenario: fmt.Sprintf("big group (%d-digit uids)", digits), Events: want, Lost: want - got})
	r.Seconds, r.PerSecond = took.Seconds(), float64(got)/took.Seconds()
	r.P50, r.P99 = pct(lat["own"], 0.5), pct(lat["own"], 0.99)
	r.PeakRSSMB = peakRSSMB(all.pid())
	roles := (all.cpu() - cpu0) / float64(want) * 1e6
	r.CPUPerMEv += roles
	r.Note = fmt.Sprintf("%d GROUP_IM to %d members: %.0f ms per message, %d entries (%.0f entries/s), %d offline receivers (events column); "+
		"RT (%d sent) on the group's partition p50 %.1f / p99 %.1f ms (p50/p99 columns), on the other partitions p50 %.1f / p99 %.1f ms; "+
		"roles' process peak RSS %.0f MB, roles' CPU %.2f s per M receivers",
		messages, members, took.Seconds()*1000/messages, entries, float64(entries)/took.Seconds(), got, sent,
		r.P50*1000, r.P99*1000, pct(lat["other"], 0.5)*1000, pct(lat["other"], 0.99)*1000, r.PeakRSSMB, roles)
	b.add(r)
	return nil
}

// waitReady waits until a child's /readyz answers 200.
func waitReady(ctx context.Context, admin string) error {
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); {
		if resp, err := http.Get("http://" + admin + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("bench: %s not ready after 2 minutes", admin)
}

// countReceivers reads list as it fills until its entries name want
// receivers (or nothing arrives for idle); it returns the receivers and
// entries seen.
func (b *Bench) countReceivers(ctx context.Context, list string, want int, idle time.Duration) (receivers, entries int, err error) {
	last := time.Now()
	for receivers < want && time.Since(last) < idle {
		vals, err := b.rc.LRange(ctx, list, int64(entries), int64(entries)+999).Result()
		if err != nil {
			return receivers, entries, err
		}
		for _, v := range vals {
			var e struct{ Receivers []int64 }
			if err := json.Unmarshal([]byte(v), &e); err != nil {
				return receivers, entries, err
			}
			receivers += len(e.Receivers)
		}
		entries += len(vals)
		if len(vals) > 0 {
			last = time.Now()
		} else {
			time.Sleep(5 * time.Millisecond)
		}
	}
	return receivers, entries, nil
}

// deliverLatencies reads the deliver topics of servers s0…s(n-1) and
// returns, by msg.content, the time from each event's ts to its delivery
// record's timestamp (when the fanout produced it).
func (b *Bench) deliverLatencies(ctx context.Context, prefix string, n int) (map[string][]time.Duration, error) {
	out := map[string][]time.Duration{}
	for s := 0; s < n; s++ {
		topic := prefix + "s" + strconv.Itoa(s)
		first, ends, err := b.conn.Offsets(ctx, topic)
		if err != nil {
			return nil, err
		}
		for p, end := range ends {
			if end <= first[p] {
				continue
			}
			r := kafka.NewReader(kafka.ReaderConfig{Brokers: b.cfg.Kafka.Brokers, Topic: topic, Partition: p, MaxWait: 50 * time.Millisecond})
			for {
				m, err := r.ReadMessage(ctx)
				if err != nil {
					r.Close()
					return nil, err
				}
				var ev struct {
					TS  int64 `json:"ts"`
					Msg struct {
						Content string `json:"content"`
					} `json:"msg"`
				}
				if json.Unmarshal(m.Value, &ev) == nil && ev.TS > 0 {
					out[ev.Msg.Content] = append(out[ev.Msg.Content], m.Time.Sub(time.UnixMilli(ev.TS)))
				}
				if m.Offset >= end-1 {
					break
				}
			}
			r.Close()
		}
	}
	return out, nil
}

// pct is the p-quantile of ds in seconds (0 when empty).
func pct(ds []time.Duration, p float64) float64 {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, int(p*float64(len(s))))].Seconds()
}
