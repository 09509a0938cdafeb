package presence

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"

	"github.com/imstream/imstream/internal/plumbing/config"
	"github.com/imstream/imstream/internal/plumbing/stage"
	"github.com/imstream/imstream/internal/tools/testkit"
	"github.com/imstream/imstream/schemas"
	"github.com/imstream/imstream/store"
)

// newTestPresence builds the stage on an in-memory store; nothing here
// talks to Kafka (the stage is driven through apply).
func newTestPresence(t *testing.T) (*Presence, *store.MemoryPresence) {
	t.Helper()
	st := store.NewMemoryPresence(30 * time.Second)
	p, err := New(config.Default().Presence, testkit.StageEnv(config.Default()), st)
	if err != nil {
		t.Fatal(err)
	}
	return p, st
}

func decoded(t *testing.T, evs ...*schemas.Presence) []stage.Decoded[*schemas.Presence] {
	t.Helper()
	var out []stage.Decoded[*schemas.Presence]
	for i, ev := range evs {
		v, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, stage.Decoded[*schemas.Presence]{Event: ev, Msg: &kafka.Message{Topic: "imr.presence", Offset: int64(i), Value: v}})
	}
	return out
}

// TestApply: a server comes up and subscribes a user (online), an event
// whose epoch is further ahead than presence.epoch_skew is rejected as
// epoch_ahead and changes nothing, and the events are counted by type.
func TestApply(t *testing.T) {
	p, st := newTestPresence(t)
	now := time.Now()
	epoch := now.UnixMilli()
	on := true
	ev := func(typ schemas.Type, uid int64, epoch int64) *schemas.Presence {
		return &schemas.Presence{Header: schemas.Header{V: 1, Type: typ, Server: "im-1", AppID: 7, TS: now.UnixMilli()}, Epoch: epoch, UID: uid, Online: &on}
	}
	poisoned := ev(schemas.TypeHeartbeat, 0, now.Add(time.Hour).UnixMilli())
	rejected, err := p.apply(context.Background(), stage.Batch{}, decoded(t,
		ev(schemas.TypeServerUp, 0, epoch), ev(schemas.TypeSubscribe, 1001, epoch), poisoned))
	if err != nil {
		t.Fatal(err)
	}
	if len(rejected) != 1 || rejected[0].Code != ReasonEpochAhead || rejected[0].Msg.Offset != 2 {
		t.Fatalf("rejected %+v, want the third event as %s", rejected, ReasonEpochAhead)
	}
	got, err := st.Users(context.Background(), 7, []int64{1001}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if !got[0].Online || fmt.Sprint(got[0].Servers) != "[im-1]" {
		t.Errorf("user 1001: %+v, want online on im-1 (the poisoned heartbeat must not have voided the epoch)", got[0])
	}
	for typ, want := range map[string]float64{"server_up": 1, "subscribe": 1, "heartbeat": 0} {
		if v := testutil.ToFloat64(p.events.WithLabelValues(typ)); v != want {
			t.Errorf("imstream_presence_events_total{type=%q} = %v, want %v", typ, v, want)
		}
	}
}

// failingLive is a store whose LiveServers fails while fail is set.
type failingLive struct {
	*store.MemoryPresence
	fail bool
}

func (f *failingLive) LiveServers(ctx context.Context, now time.Time) ([]string, error) {
	if f.fail {
		return nil, fmt.Errorf("redis: connection refused")
	}
	return f.MemoryPresence.LiveServers(ctx, now)
}

// TestLiveServersKeepsLastValue: while the store cannot be read,
// imstream_presence_live_servers keeps the last value read (a Redis outage
// is not IM servers disappearing) and the failure is counted apart.
func TestLiveServersKeepsLastValue(t *testing.T) {
	st := &failingLive{MemoryPresence: store.NewMemoryPresence(30 * time.Second)}
	env := testkit.StageEnv(config.Default())
	if _, err := New(config.Default().Presence, env, st); err != nil {
		t.Fatal(err)
	}
	up := &schemas.Presence{Header: schemas.Header{V: 1, Type: schemas.TypeServerUp, Server: "im-1", AppID: 7, TS: time.Now().UnixMilli()}, Epoch: 1}
	if err := st.Apply(context.Background(), []*schemas.Presence{up}, time.Now()); err != nil {
		t.Fatal(err)
	}
	// read gathers the two series; a gather collects its collectors
	// concurrently, so the errors counter may be read before the gauge's
	// own read fails: it is checked at the next gather.
	read := func() (live, errs float64) {
		mfs, err := env.Registerer.(prometheus.Gatherer).Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if n := mf.GetName(); n == "imstream_presence_live_servers" {
				live = mf.GetMetric()[0].GetGauge().GetValue()
			} else if n == "imstream_presence_live_servers_errors_total" {
				errs = mf.GetMetric()[0].GetCounter().GetValue()
			}
		}
		return live, errs
	}
	if live, errs := read(); live != 1 || errs != 0 {
		t.Fatalf("healthy: live %v, errors %v", live, errs)
	}
	st.fail = true
	read()
	if live, errs := read(); live != 1 || errs < 1 {
		t.Fatalf("store failing: live %v, errors %v; want the last value (1) and the failures counted", live, errs)
	}
}

// TestUsersGaugeAtStart: the users gauge holds the count from the start,
// not from the first presence.gc_interval (a minute) later.
func TestUsersGaugeAtStart(t *testing.T) {
	st := store.NewMemoryPresence(30 * time.Second)
	now := time.Now()
	on := true
	h := schemas.Header{V: 1, Server: "im-1", AppID: 7, TS: now.UnixMilli()}
	up, sub := h, h
	up.Type, sub.Type = schemas.TypeServerUp, schemas.TypeSubscribe
	evs := []*schemas.Presence{{Header: up, Epoch: 1}}
	for uid := int64(1); uid <= 3; uid++ {
		evs = append(evs, &schemas.Presence{Header: sub, Epoch: 1, UID: uid, Online: &on})
	}
	if err := st.Apply(context.Background(), evs, now); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.Presence.GCInterval = time.Hour // the regular pass never comes in this test
	env := testkit.StageEnv(cfg)
	p, err := New(cfg.Presence, env, st)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go p.collect(ctx, st)
	testkit.Eventually(t, 10*time.Second, "the users gauge at 3", func() bool {
		return testutil.ToFloat64(p.users) == 3
	})
}
