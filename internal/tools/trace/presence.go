package trace

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/imstream/imstream/ingest"
	"github.com/imstream/imstream/internal/plumbing/kafkax"
	"github.com/imstream/imstream/internal/plumbing/stage"
	"github.com/imstream/imstream/schemas"
)

// presenceRecord is a presence event with the record that carried it.
type presenceRecord struct {
	m kafka.Message
	p *schemas.Presence
}

func (r presenceRecord) hop(detail string) Hop {
	return Hop{What: string(r.p.Type), Topic: r.m.Topic, Partition: r.m.Partition, Offset: r.m.Offset, Time: r.m.Time, Detail: detail}
}

// ts is when the event happened for leases: its ts, else its record's.
func (r presenceRecord) ts() time.Time {
	if r.p.TS > 0 {
		return time.UnixMilli(r.p.TS)
	}
	return r.m.Time
}

// presence reads the presence of ev's receiver as of at from imr.presence,
// by the rules of docs/protocol.md §2–3: the receiver's last event on each
// server within lookback before at, then for each server it subscribed
// on, that server's last server event within two leases before at. The
// note says what the log shows, in the words of the decision header
// ("present=s1 online=true"), and which subscriptions did not count.
func (t *tracing) presence(ctx context.Context, ev *schemas.Publish, at time.Time, lookback time.Duration) ([]Hop, string, error) {
	if lookback <= 0 {
		lookback = DefaultLookback
	}
	lease := t.Lease
	if lease <= 0 {
		lease = 30 * time.Second
	}
	topic := t.Kafka.Topics.Presence
	n, err := t.Conn.Partitions(ctx, topic)
	if err != nil {
		if kafkax.UnknownTopic(err) {
			return nil, "no presence topic", nil
		}
		return nil, "", err
	}
	key := ingest.UserKey(ev.AppID, ev.Receiver)
	last := map[string]presenceRecord{} // server → the receiver's last event there
	var servers []string
	err = t.scan(ctx, topic, kafkax.PartitionFor([]byte(key), n), at.Add(-lookback), at, func(m kafka.Message) bool {
		if p, ok := presenceOf(m, key); ok && p.UID == ev.Receiver && (p.Type == schemas.TypeSubscribe || p.Type == schemas.TypeUnsubscribe) {
			if _, seen := last[p.Server]; !seen {
				servers = append(servers, p.Server)
			}
			last[p.Server] = presenceRecord{m, p}
		}
		return true
	})
	if err != nil {
		return nil, "", err
	}
	if len(servers) == 0 {
		return nil, fmt.Sprintf("present= online=false (no subscribe of uid %d in the %s before; an older one is not read: --presence-lookback)", ev.Receiver, lookback), nil
	}
	var hops []Hop
	var present, void []string
	online := false
	for _, s := range servers {
		u := last[s]
		if u.p.Type == schemas.TypeUnsubscribe {
			hops = append(hops, u.hop(fmt.Sprintf("uid %d left server %s", ev.Receiver, s)))
			continue
		}
		hops = append(hops, u.hop(fmt.Sprintf("uid %d on server %s, online=%v, epoch %d", ev.Receiver, s, u.p.IsOnline(), u.p.Epoch)))
		srv, why, err := t.serverAt(ctx, n, s, u.p.Epoch, at, lease)
		if err != nil {
			return nil, "", err
		}
		if srv.p != nil {
			hops = append(hops, srv.hop(fmt.Sprintf("server %s, epoch %d: %s", s, srv.p.Epoch, why)))
		}
		if why != "live" {
			void = append(void, s+" "+why)
			continue
		}
		present = append(present, s)
		online = online || u.p.IsOnline()
	}
	slices.Sort(present)
	note := fmt.Sprintf("present=%s online=%v", strings.Join(present, ","), online)
	if len(void) > 0 {
		note += " (not counted: " + strings.Join(void, "; ") + ")"
	}
	return hops, note, nil
}

// serverAt finds server s's last server event within two leases before
// at (in imr.presence, of n partitions) and judges a subscription of s's
// epoch by it: "live", or why not.
func (t *tracing) serverAt(ctx context.Context, n int, s string, epoch int64, at time.Time, lease time.Duration) (presenceRecord, string, error) {
	key := ingest.ServerKey(s)
	var last presenceRecord
	err := t.scan(ctx, t.Kafka.Topics.Presence, kafkax.PartitionFor([]byte(key), n), at.Add(-2*lease), at, func(m kafka.Message) bool {
		if p, ok := presenceOf(m, key); ok && p.Server == s && (p.Type == schemas.TypeServerUp || p.Type == schemas.TypeHeartbeat || p.Type == schemas.TypeServerDown) {
			last = presenceRecord{m, p}
		}
		return true
	})
	switch {
	case err != nil:
		return last, "", err
	case last.p == nil:
		return last, fmt.Sprintf("dead (no heartbeat in the %s before)", 2*lease), nil
	case last.p.Epoch > epoch:
		return last, fmt.Sprintf("restarted (epoch %d after the subscription's %d: void)", last.p.Epoch, epoch), nil
	case last.p.Type == schemas.TypeServerDown:
		return last, "shut down", nil
	case at.Sub(last.ts()) >= lease:
		return last, fmt.Sprintf("dead (its last heartbeat %s before: lease %s lapsed)", at.Sub(last.ts()).Round(time.Millisecond), lease), nil
	}
	return last, "live", nil
}

// presenceOf decodes m, a record keyed key, as a presence event.
func presenceOf(m kafka.Message, key string) (*schemas.Presence, bool) {
	if string(m.Key) != key {
		return nil, false
	}
	ev, err := schemas.DecodeKindFormat(m.Value, 1<<20, schemas.KindPresence, stage.Format(&m))
	if err != nil {
		return nil, false
	}
	p, ok := ev.(*schemas.Presence)
	return p, ok
}
