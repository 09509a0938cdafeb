// Package trace answers "where is my message?" (`imstream trace`, the
// admin port's /trace): it finds a publish event in the log and follows it
// through every hop — the input record, a dead letter, the spill topic
// when fair share held it back, deliveries to IM servers' topics, push
// jobs and whether the pusher appended their entries.
//
// It reads only the partitions the keys map to (murmur2, as producers
// partition), from the offsets an offsets-by-time lookup gives, so it
// answers in seconds on topics of billions of records; it joins no
// consumer group and moves no offset.
package trace

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"

	"github.com/imstream/imstream/fanout"
	"github.com/imstream/imstream/ingest"
	"github.com/imstream/imstream/internal/plumbing/config"
	"github.com/imstream/imstream/internal/plumbing/kafkax"
	"github.com/imstream/imstream/internal/plumbing/stage"
	"github.com/imstream/imstream/pusher"
	"github.com/imstream/imstream/schemas"
)

// Query names the event: its app and the receiver it was keyed by (one of
// UID, Group, Room, or Broadcast: the app's broadcasts), in a time window,
// and what tells it from the others there: its msgid, or — for messages
// without one (RT, room messages, notifications carry msgid 0) — its
// sender and a piece of its content; the first event that matches all the
// given ones is traced.
type Query struct {
	AppID, MsgID     int64
	Sender           int64  // the inner message's sender
	Content          string // found in the message's content or notification, or in its raw inner frame
	UID, Group, Room int64
	Broadcast        bool
	Since, Until     time.Time // Until zero: now
	// Lookback is how far before the event the receiver's presence is
	// read from the log (a peer message; 0: DefaultLookback).
	Lookback time.Duration
}

// DefaultLookback is how far back a trace reads a receiver's presence
// events: a subscription older than that is not seen (the trace says so).
const DefaultLookback = time.Hour

// ErrQuery is a query that cannot be answered as asked.
var ErrQuery = errors.New("trace: bad query")

// Check reports what is wrong with q.
func (q Query) Check() error {
	n := 0
	for _, v := range []int64{q.UID, q.Group, q.Room} {
		if v != 0 {
			n++
		}
	}
	if q.Broadcast {
		n++
	}
	switch {
	case q.AppID <= 0:
		return fmt.Errorf("%w: appid is required", ErrQuery)
	case q.MsgID == 0 && q.Sender == 0 && q.Content == "":
		return fmt.Errorf("%w: name the event by msgid, or by sender and/or content (messages without a msgid)", ErrQuery)
	case n != 1:
		return fmt.Errorf("%w: name exactly one of uid, group, room, broadcast", ErrQuery)
	case q.Since.IsZero():
		return fmt.Errorf("%w: a window is required (since)", ErrQuery)
	}
	return nil
}

// Hop is one record on the event's way.
type Hop struct {
	What      string    `json:"what"` // input, dead_letter, held, delivery, push_job
	Topic     string    `json:"topic"`
	Partition int       `json:"partition"`
	Offset    int64     `json:"offset"`
	Time      time.Time `json:"time"`
	Detail    string    `json:"detail"`
	// Decision is a delivery's or push job's imstream-decision header:
	// the rule the fanout applied and what it read (docs/protocol.md §6).
	Decision string `json:"decision,omitempty"`
	// PresenceAt is its imstream-presence-at header: presence as applied
	// through this time is what the decision read.
	PresenceAt time.Time `json:"presence_at,omitzero"`
}

// Result is a trace.
type Result struct {
	Found bool             `json:"found"`
	Event *schemas.Publish `json:"event,omitempty"`
	Hops  []Hop            `json:"hops"`
	// Presence is, for a peer message, the receiver's presence read from
	// imr.presence as of the decision (its presence_at, else the event's
	// time): the receiver's last event on each server and those servers'
	// last event, so a decision — or why there was no output — can be
	// checked against the log.
	Presence []Hop    `json:"presence,omitempty"`
	Notes    []string `json:"notes,omitempty"`
	// Unread are the partition reads that gave up before their end: what
	// they did not read was not searched.
	Unread []Unread `json:"unread,omitempty"`
}

// Unread is a partition read that gave up: it read offsets [From, Next) of
// [From, End), then no record came within the read timeout.
type Unread struct {
	Topic     string `json:"topic"`
	Partition int    `json:"partition"`
	From      int64  `json:"from"`
	Next      int64  `json:"next"`
	End       int64  `json:"end"`
}

// Tracer traces events on one deployment.
type Tracer struct {
	Conn   *kafkax.Conn
	Kafka  config.Kafka
	Pusher config.Pusher
	Redis  redis.UniversalClient // nil: push entries are not checked
	Prefix string                // redis.key_prefix
	Lease  time.Duration         // presence.lease (0: 30 s)
	// ReadTimeout is how long a read waits for a partition's next record
	// before giving up on the rest of it (0: DefaultReadTimeout).
	ReadTimeout time.Duration
}

// what names the event as the query does.
func (q Query) what() string {
	var w []string
	if q.MsgID != 0 {
		w = append(w, fmt.Sprintf("msgid %d", q.MsgID))
	}
	if q.Sender != 0 {
		w = append(w, fmt.Sprintf("sender %d", q.Sender))
	}
	if q.Content != "" {
		w = append(w, fmt.Sprintf("content containing %q", q.Content))
	}
	return strings.Join(w, " and ")
}

func (q Query) key() (string, []string) {
	switch {
	case q.Group != 0:
		return ingest.GroupKey(q.AppID, q.Group), []string{"online"}
	case q.Room != 0:
		return ingest.RoomKey(q.AppID, q.Room), []string{"online"}
	case q.Broadcast:
		return ingest.BroadcastKey(q.AppID), []string{"online"}
	}
	return ingest.UserKey(q.AppID, q.UID), []string{"online", "bulk"}
}

// DefaultReadTimeout is how long a trace waits for the next record of a
// partition it reads before it gives up on the rest of that partition.
const DefaultReadTimeout = 20 * time.Second

// Trace finds q's event and follows it. A partition whose next record did
// not arrive within ReadTimeout is left unread from there: the trace goes
// on with the others and Result.Unread says what it did not read.
func (t *Tracer) Trace(ctx context.Context, q Query) (Result, error) {
	s := &tracing{Tracer: t}
	res, err := s.trace(ctx, q)
	res.Unread = s.unread
	if len(s.unread) > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("incomplete: %d partition reads gave up (no record within %s; --read-timeout): the trace may miss what they hold", len(s.unread), s.readTimeout()))
	}
	return res, err
}

// tracing is one trace: the tracer and the reads it gave up.
type tracing struct {
	*Tracer
	unread []Unread
}

func (t *Tracer) readTimeout() time.Duration {
	if t.ReadTimeout > 0 {
		return t.ReadTimeout
	}
	return DefaultReadTimeout
}

func (t *tracing) trace(ctx context.Context, q Query) (Result, error) {
	if err := q.Check(); err != nil {
		return Result{}, err
	}
	if q.Until.IsZero() {
		q.Until = time.Now()
	}
	key, lanes := q.key()
	var res Result
	topics := []string{t.Kafka.Topics.Publish}
	if slices.Contains(lanes, "bulk") && !t.Kafka.Topics.OneLane() {
		topics = append(topics, t.Kafka.Topics.Bulk)
	}
	var in kafka.Message
	for _, topic := range topics {
		n, err := t.Conn.Partitions(ctx, topic)
		if err != nil {
			return res, err
		}
		p := kafkax.PartitionFor([]byte(key), n)
		err = t.scan(ctx, topic, p, q.Since, q.Until, func(m kafka.Message) bool {
			if ev, ok := match(m, q); ok {
				in, res.Event, res.Found = m, ev, true
				return false
			}
			return true
		})
		if err != nil {
			return res, err
		}
		if res.Found {
			break
		}
	}
	// Dead letters: a record rejected on its way in (wrong key, bad field)
	// may sit on any partition of its topic; the dead-letter topic holds it.
	dead, err := t.deadLetters(ctx, q, in)
	if err != nil {
		return res, err
	}
	if !res.Found {
		res.Hops = dead
		res.Found = len(dead) > 0
		if !res.Found {
			res.Notes = append(res.Notes, fmt.Sprintf("no publish event of app %d with %s keyed %q between %s and %s, and no dead letter of it",
				q.AppID, q.what(), key, q.Since.UTC().Format(time.RFC3339), q.Until.UTC().Format(time.RFC3339)))
		}
		return res, nil
	}
	res.Hops = append(res.Hops, Hop{What: "input", Topic: in.Topic, Partition: in.Partition, Offset: in.Offset, Time: in.Time,
		Detail: fmt.Sprintf("%s from server %s, cmd %d, key %s", res.Event.Type, res.Event.Server, res.Event.Msg.Cmd, in.Key)})
	res.Hops = append(res.Hops, dead...)
	outs, err := t.outputs(ctx, in, res.Event, q.Until)
	if err != nil {
		return res, err
	}
	res.Hops = append(res.Hops, outs...)
	if len(outs) == 0 && len(dead) == 0 {
		res.Notes = append(res.Notes, noOutput(res.Event))
	}
	slices.SortStableFunc(res.Hops[1:], func(a, b Hop) int { return a.Time.Compare(b.Time) })
	if res.Event.Type == schemas.TypePublish && len(dead) == 0 {
		at, from := in.Time, "the event's time (no output records the presence the fanout read)"
		for _, h := range outs {
			if !h.PresenceAt.IsZero() {
				at, from = h.PresenceAt, "the presence the fanout read (imstream-presence-at)"
				break
			}
		}
		pres, note, err := t.presence(ctx, res.Event, at, q.Lookback)
		if err != nil {
			return res, err
		}
		res.Presence = pres
		res.Notes = append(res.Notes, fmt.Sprintf("presence from the log as of %s, %s: %s", at.UTC().Format("15:04:05.000"), from, note))
		read, _, _ := strings.Cut(note, " (")
		for _, h := range outs {
			if d, ok := strings.CutPrefix(h.Decision, "peer "); ok && d != read {
				res.Notes = append(res.Notes, fmt.Sprintf("the fanout read %q, the log here %q: events of the receiver or its servers ordered differently in the log than in time, or older than the lookback", d, read))
				break
			}
		}
	}
	return res, nil
}

// noOutput explains an event the fanout wrote nothing for.
func noOutput(ev *schemas.Publish) string {
	m := &ev.Msg
	switch {
	case ev.Type == schemas.TypePublish && m.Persistent():
		return "no delivery and no push job: a persistent message to a receiver who was online when it was routed (its IM server stores it; im_service's router forwards nothing either), or the fanout has not routed it yet (see its lag)"
	case !m.Pushable():
		return fmt.Sprintf("no delivery and no push job: cmd %d is never pushed, so a receiver without a live server gets nothing (im_service: the same), or the fanout has not routed it yet", m.Cmd)
	case ev.Type == schemas.TypePublishGroup:
		return "no output: an unknown group (imstream_skipped_total{reason=\"unknown_group\"}), a group whose members were all online, or not routed yet"
	}
	return "no output: every receiver was online on the origin server only, or the event is not routed yet (see the fanout's lag)"
}

// match decodes m and reports whether it is q's event.
func match(m kafka.Message, q Query) (*schemas.Publish, bool) {
	ev, err := schemas.DecodeKindFormat(m.Value, 16<<20, schemas.KindPublish, stage.Format(&m))
	if err != nil {
		return nil, false
	}
	p := ev.(*schemas.Publish)
	msg := &p.Msg
	return p, p.AppID == q.AppID && (q.MsgID == 0 || p.MsgID == q.MsgID || msg.MsgID == q.MsgID) &&
		(q.Sender == 0 || msg.Sender == q.Sender) &&
		(q.Content == "" || strings.Contains(msg.Content, q.Content) || strings.Contains(msg.Notification, q.Content) ||
			bytes.Contains(msg.Raw, []byte(q.Content)))
}

// traced names a record's traceparent, when it has one.
func traced(hs []kafka.Header) string {
	if v := header(hs, fanout.HeaderTraceparent); v != "" {
		return " (traceparent " + v + ")"
	}
	return ""
}

// decided sets h's decision from the record's headers: imstream-decision
// (a push_jobs record of several jobs has none) and imstream-presence-at.
func decided(h Hop, hs []kafka.Header) Hop {
	for _, x := range hs {
		switch x.Key {
		case fanout.HeaderDecision:
			h.Decision = string(x.Value)
		case fanout.HeaderPresenceAt:
			if ms, err := strconv.ParseInt(string(x.Value), 10, 64); err == nil {
				h.PresenceAt = time.UnixMilli(ms)
			}
		}
	}
	return h
}

func header(hs []kafka.Header, k string) string {
	for _, h := range hs {
		if h.Key == k {
			return string(h.Value)
		}
	}
	return ""
}

// deadLetters are the dead letters of q's event: of the input (in, when
// found) by its coordinates, else any that decodes as q's event.
func (t *tracing) deadLetters(ctx context.Context, q Query, in kafka.Message) ([]Hop, error) {
	var out []Hop
	n, err := t.Conn.Partitions(ctx, t.Kafka.Topics.DLQ)
	if err != nil {
		if kafkax.UnknownTopic(err) {
			return nil, nil
		}
		return nil, err
	}
	for p := range n {
		err := t.scan(ctx, t.Kafka.Topics.DLQ, p, q.Since, q.Until.Add(time.Hour), func(m kafka.Message) bool {
			ours := false
			if in.Topic != "" {
				ours = header(m.Headers, "src_topic") == in.Topic && header(m.Headers, "src_partition") == strconv.Itoa(in.Partition) &&
					header(m.Headers, "src_offset") == strconv.FormatInt(in.Offset, 10)
			} else {
				_, ours = match(m, q)
			}
			if ours {
				out = append(out, Hop{What: "dead_letter", Topic: m.Topic, Partition: m.Partition, Offset: m.Offset, Time: m.Time,
					Detail: fmt.Sprintf("%s (stage %s, read at %s/%s/%s)", header(m.Headers, "reason"), header(m.Headers, "stage"),
						header(m.Headers, "src_topic"), header(m.Headers, "src_partition"), header(m.Headers, "src_offset"))})
			}
			return true
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// outputs are the records the fanout derived from in: in the spill topic
// (held back), the deliver topics and imr.push.
func (t *tracing) outputs(ctx context.Context, in kafka.Message, ev *schemas.Publish, until time.Time) ([]Hop, error) {
	var out []Hop
	from := in.Time.Add(-time.Second) // producers' clocks
	until = until.Add(time.Hour)      // outputs come after
	isSrc := func(s *schemas.Source) bool {
		return s != nil && s.Topic == in.Topic && s.Partition == in.Partition && s.Offset == in.Offset
	}
	// Held back by fair share: the spill topic, partitioned by appid.
	if n, err := t.Conn.Partitions(ctx, t.Kafka.Topics.Spill); err == nil {
		p := fanout.SpillPartition(ev.AppID, in.Partition, n)
		err := t.scan(ctx, t.Kafka.Topics.Spill, p, from, until, func(m kafka.Message) bool {
			if fanout.Holds(&m, ev.AppID, in.Topic, in.Partition, in.Offset) {
				out = append(out, Hop{What: "held", Topic: m.Topic, Partition: m.Partition, Offset: m.Offset, Time: m.Time,
					Detail: "held back by fair share (its app was above its quota or share); the drainer read it back from its partition by this reference and routed it"})
			}
			return true
		})
		if err != nil {
			return nil, err
		}
	}
	// Deliveries: every deliver topic's partition for the event's key.
	topics, err := t.deliverTopics(ctx)
	if err != nil {
		return nil, err
	}
	for _, topic := range topics {
		n, err := t.Conn.Partitions(ctx, topic)
		if err != nil {
			return nil, err
		}
		p := kafkax.PartitionFor(in.Key, n)
		err = t.scan(ctx, topic, p, from, until, func(m kafka.Message) bool {
			d, err := schemas.DecodeKind(m.Value, 16<<20, schemas.KindPublish)
			if err == nil && isSrc(d.(*schemas.Publish).Src) {
				out = append(out, decided(Hop{What: "delivery", Topic: m.Topic, Partition: m.Partition, Offset: m.Offset, Time: m.Time,
					Detail: "to IM server " + strings.TrimPrefix(topic, t.Kafka.Topics.DeliverPrefix) + traced(m.Headers)}, m.Headers))
			}
			return true
		})
		if err != nil {
			return nil, err
		}
	}
	// Push jobs: imr.push partition = source partition mod partitions.
	n, err := t.Conn.Partitions(ctx, t.Kafka.Topics.Push)
	if err != nil {
		return nil, err
	}
	enc := pusher.Encoder{ROMApps: map[int64]bool{}, SystemPush: t.Pusher.SystemPush}
	for _, a := range t.Pusher.ROMApps {
		enc.ROMApps[a] = true
	}
	err = t.scan(ctx, t.Kafka.Topics.Push, fanout.PushPartition(in.Partition, n), from, until, func(m kafka.Message) bool {
		ev, err := schemas.DecodeKindFormat(m.Value, 16<<20, schemas.KindPushJob, stage.Format(&m))
		if err != nil {
			return true
		}
		jobs := []*schemas.PushJob{}
		switch e := ev.(type) {
		case *schemas.PushJob:
			jobs = append(jobs, e)
		case *schemas.PushJobs:
			jobs = e.Jobs
		}
		for _, j := range jobs {
			if !isSrc(j.Src) {
				continue
			}
			out = append(out, decided(Hop{What: "push_job", Topic: m.Topic, Partition: m.Partition, Offset: m.Offset, Time: m.Time,
				Detail: t.entries(ctx, enc, j) + traced(m.Headers)}, m.Headers))
		}
		return true
	})
	return out, err
}

// entries describes a push job's entries: their lists, and whether the
// pusher's watermark shows them appended.
func (t *tracing) entries(ctx context.Context, enc pusher.Encoder, j *schemas.PushJob) string {
	who := fmt.Sprintf("%d receivers", len(j.Receivers))
	if len(j.MemberRange) == 2 {
		who = fmt.Sprintf("group %d members in [%d, %d)", j.Msg.Receiver, j.MemberRange[0], j.MemberRange[1])
	}
	es := enc.Append(nil, j, "", "", 0, 0)
	if len(es) == 0 {
		return who + ": no entry (SYSTEM with pusher.system_push off, or no receiver offline when it was written)"
	}
	lists := map[string]bool{}
	for _, e := range es {
		lists[e.List] = true
	}
	var names []string
	for l := range lists {
		names = append(names, l)
	}
	slices.Sort(names)
	d := fmt.Sprintf("%s → %s", who, strings.Join(names, ", "))
	if t.Redis == nil {
		return d
	}
	sink := pusher.RedisSink{Client: t.Redis, Prefix: t.Prefix}
	e := es[0]
	v, err := t.Redis.Get(ctx, sink.WatermarkKey(e.List, e.SrcTopic, e.SrcPartition, e.App)).Int64()
	if errors.Is(err, redis.Nil) {
		v, err = t.Redis.Get(ctx, sink.LegacyWatermarkKey(e.List, e.SrcTopic, e.SrcPartition)).Int64()
	}
	switch {
	case errors.Is(err, redis.Nil):
		return d + "; not appended yet (the list has no watermark for this source partition)"
	case err != nil:
		return d + "; appended? unknown: " + err.Error()
	case v >= e.Pos:
		return d + "; appended (the pusher's watermark is past it)"
	}
	return d + "; not appended yet (the pusher's watermark is before it: see its lag)"
}

// deliverTopics lists the deliver topics.
func (t *tracing) deliverTopics(ctx context.Context) ([]string, error) {
	resp, err := t.Conn.Client().Metadata(ctx, &kafka.MetadataRequest{})
	if err != nil {
		return nil, fmt.Errorf("trace: list topics: %w", err)
	}
	var out []string
	for _, tp := range resp.Topics {
		if strings.HasPrefix(tp.Name, t.Kafka.Topics.DeliverPrefix) {
			out = append(out, tp.Name)
		}
	}
	slices.Sort(out)
	return out, nil
}

// scan calls fn for the records of topic/partition written from since to
// until (by an offsets-by-time lookup, then until the partition's end or a
// record after until), until fn returns false. A read that stalls is
// recorded in t.unread, not an error.
func (t *tracing) scan(ctx context.Context, topic string, partition int, since, until time.Time, fn func(kafka.Message) bool) error {
	from, end, err := t.Conn.OffsetsAt(ctx, topic, partition, since)
	if err != nil {
		return fmt.Errorf("trace: %w", err)
	}
	if from < 0 || from >= end {
		return nil
	}
	err = t.Conn.ReadRange(ctx, topic, partition, from, end, t.readTimeout(), func(m kafka.Message) bool {
		return !m.Time.After(until) && fn(m)
	})
	if st := (*kafkax.Stalled)(nil); errors.As(err, &st) {
		t.unread = append(t.unread, Unread{Topic: topic, Partition: partition, From: st.From, Next: st.Next, End: st.End})
		return nil
	}
	if err != nil {
		return fmt.Errorf("trace: %w", err)
	}
	return nil
}
