package pusher

import (
	"strconv"

	"github.com/imstream/imstream/schemas"
)

// List names (docs/protocol.md §5). ROM apps get a "_<appid>" suffix on push_queue,
// group_push_queue and customer_push_queue_v2; system and customer lists
// never do.
const (
	ListPeer       = "push_queue"
	ListGroup      = "group_push_queue"
	ListCustomer   = "customer_push_queue"
	ListCustomerV2 = "customer_push_queue_v2"
	ListSystem     = "system_push_queue"
)

// Entry is one offline-push entry: the JSON to RPUSH onto List, and where
// it came from, for the exactly-once watermark.
//
// The position is taken from the push job's src (the publish event the
// fanout derived it from): Pos = src.offset<<16 | src.index within source
// partition (SrcTopic, SrcPartition). A fanout that replays after a crash
// re-produces jobs at new imr.push offsets but with the same src, so the
// watermark recognises them. Jobs without src (written by other tools) use
// their own imr.push coordinates.
type Entry struct {
	List         string
	Kind         string // List without the ROM suffix, for metrics
	SrcTopic     string
	SrcPartition int
	App          int64 // the job's appid: watermarks are per app (fair share routes one app's entries after later ones of others)
	Pos          int64
	Job          int64 // the push job's own imr.push offset: tells a job's entries (same Pos) from a replay of the job
	TS           int64 // origin unix ms, 0 when unknown
	Data         []byte
	// Written is set by Sink.Append on the entries it appended; the others
	// were repeats (below the watermark, or a replay within the call).
	Written bool
}

// Position returns the source coordinates of a push job read from
// (topic, partition, offset) in incarnation inc.
// The stream is the topic qualified by the log's incarnation
// (schemas.Source.Stream): positions of another incarnation count apart.
func Position(job *schemas.PushJob, topic, inc string, partition int, offset int64) (string, int, int64) {
	if s := job.Src; s != nil {
		return s.Stream(), s.Partition, s.Offset<<16 | int64(s.Index)
	}
	return schemas.StreamOf(topic, inc), partition, offset << 16
}

// Encoder turns push jobs into entries.
type Encoder struct {
	ROMApps    map[int64]bool
	SystemPush bool
}

// Append appends the entries of job (read at topic/partition/offset, in
// incarnation inc) to dst. It returns dst
// unchanged when the job yields no entry (SYSTEM with system push off).
// Keys are in sorted order and strings escaped exactly as Go's
// encoding/json does for a map, which is what im_service wrote.
func (e *Encoder) Append(dst []Entry, job *schemas.PushJob, topic, inc string, partition int, offset int64) []Entry {
	m := &job.Msg
	appid := job.AppID
	st, sp, pos := Position(job, topic, inc, partition, offset)
	add := func(kind string, rom bool, data []byte) {
		list := kind
		if rom && e.ROMApps[appid] {
			list = kind + "_" + strconv.FormatInt(appid, 10)
		}
		dst = append(dst, Entry{List: list, Kind: kind, SrcTopic: st, SrcPartition: sp, App: appid, Pos: pos, Job: offset, TS: job.TS, Data: data})
	}
	switch m.Cmd {
	case schemas.CmdIM:
		for _, r := range job.Receivers {
			add(ListPeer, true, newObject(64+len(m.Content)).num("appid", appid).text("content", m.Content).
				num("receiver", r).num("sender", m.Sender).end())
		}
	case schemas.CmdGroupIM:
		add(ListGroup, true, newObject(80+len(m.Content)+12*len(job.Receivers)).num("appid", appid).
			text("content", m.Content).num("group_id", m.Receiver).nums("receivers", job.Receivers).
			num("sender", m.Sender).end())
	case schemas.CmdCustomer, schemas.CmdCustomerSupport:
		for _, r := range job.Receivers {
			add(ListCustomer, false, newObject(160+len(m.Content)).num("appid", appid).num("command", int64(m.Cmd)).
				text("content", m.Content).num("customer", m.CustomerID).num("customer_appid", m.CustomerAppID).
				num("receiver", r).num("seller", m.SellerID).num("store", m.StoreID).end())
		}
	case schemas.CmdCustomerV2:
		for _, r := range job.Receivers {
			add(ListCustomerV2, true, newObject(140+len(m.Content)).num("appid", appid).text("content", m.Content).
				num("receiver", r).num("receiver_appid", m.ReceiverAppID).num("sender", m.Sender).
				num("sender_appid", m.SenderAppID).end())
		}
	case schemas.CmdSystem:
		if !e.SystemPush {
			return dst
		}
		for _, r := range job.Receivers {
			add(ListSystem, false, newObject(64+len(m.Notification)).num("appid", appid).
				text("content", m.Notification).num("receiver", r).end())
		}
	}
	return dst
}

// object builds a push entry's JSON object; callers give the keys in
// sorted order, as encoding/json writes a map's.
type object []byte

func newObject(size int) object { return append(make(object, 0, size), '{') }

func (o object) key(k string) object {
	if len(o) > 1 {
		o = append(o, ',')
	}
	o = append(append(append(o, '"'), k...), '"', ':')
	return o
}

func (o object) num(k string, v int64) object { return strconv.AppendInt(o.key(k), v, 10) }

func (o object) text(k, v string) object { return schemas.AppendString(o.key(k), v) }

func (o object) nums(k string, vs []int64) object {
	o = append(o.key(k), '[')
	for i, v := range vs {
		if i > 0 {
			o = append(o, ',')
		}
		o = strconv.AppendInt(o, v, 10)
	}
	return append(o, ']')
}

func (o object) end() []byte { return append(o, '}') }
