package ingest

import (
	"strconv"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/imstream/imstream/schemas"
)

// Record is one encoded event, ready to produce.
type Record struct {
	Topic string
	Key   string
	Value []byte
	// Headers go on the Kafka record: the format header of a record in
	// the binary format (schemas.HeaderFormat), none for JSON.
	Headers []kafka.Header
}

// Message is the record as kafka-go writes it.
func (r Record) Message() kafka.Message {
	return kafka.Message{Topic: r.Topic, Key: []byte(r.Key), Value: r.Value, Headers: r.Headers}
}

// binaryHeaders names the binary format; shared by every binary record
// (kafka-go only reads a message's headers).
var binaryHeaders = []kafka.Header{{Key: schemas.HeaderFormat, Value: []byte(schemas.FormatBinary)}}

// Topics names the topics an IM server produces to.
type Topics struct {
	Presence string // imr.presence
	Publish  string // imr.publish: the online lane (publish, publish_group, publish_room)
	Bulk     string // imr.publish.bulk: the bulk lane (push); Publish for one lane
}

// Encoder builds the v1 records of one IM server (one epoch): keys as
// docs/protocol.md §1, ids "<server>:<epoch>:<n>", ts now. Safe for concurrent use.
type Encoder struct {
	server string
	epoch  int64
	topics Topics
	seq    atomic.Uint64
	binary bool
	route  string
}

// NewEncoder returns an encoder for server at epoch. An empty Bulk puts
// push events on Publish.
func NewEncoder(server string, epoch int64, t Topics) *Encoder {
	if t.Bulk == "" {
		t.Bulk = t.Publish
	}
	return &Encoder{server: server, epoch: epoch, topics: t}
}

// Binary makes e write its events in the binary format (docs/protocol.md
// §2), which only readers of this release or later take: the gateway's
// choice (kafka.internal_format). Call it before e is used. It returns e.
func (e *Encoder) Binary() *Encoder {
	e.binary = true
	return e
}

// Route makes e's publish, publish_group, publish_room and push events name
// the rules they are routed by (docs/protocol.md §4): schemas.RouteIMR,
// im_service's router's, is what the gateway writes by default. Call it
// before e is used. It returns e.
func (e *Encoder) Route(route string) *Encoder {
	e.route = route
	return e
}

func (e *Encoder) header(t schemas.Type, appid int64) schemas.Header {
	return schemas.Header{
		V: schemas.Version, Type: t, Server: e.server, AppID: appid, TS: time.Now().UnixMilli(),
		ID: e.server + ":" + strconv.FormatInt(e.epoch, 10) + ":" + strconv.FormatUint(e.seq.Add(1), 10),
	}
}

// encoded is an event that appends itself in either format.
type encoded interface {
	AppendJSON([]byte) []byte
	AppendBinary([]byte) []byte
}

// record encodes ev in e's format.
func (e *Encoder) record(topic, key string, ev encoded) Record {
	if e.binary {
		return Record{Topic: topic, Key: key, Value: ev.AppendBinary(make([]byte, 0, 128)), Headers: binaryHeaders}
	}
	return Record{Topic: topic, Key: key, Value: ev.AppendJSON(make([]byte, 0, 256))}
}

func (e *Encoder) presence(key string, ev *schemas.Presence) Record {
	ev.Epoch = e.epoch
	return e.record(e.topics.Presence, key, ev)
}

// Subscribe: uid has at least one connection on this server.
func (e *Encoder) Subscribe(appid, uid int64, online bool) Record {
	return e.presence(UserKey(appid, uid), &schemas.Presence{Header: e.header(schemas.TypeSubscribe, appid), UID: uid, Online: &online})
}

// Unsubscribe: uid's last connection on this server left.
func (e *Encoder) Unsubscribe(appid, uid int64) Record {
	return e.presence(UserKey(appid, uid), &schemas.Presence{Header: e.header(schemas.TypeUnsubscribe, appid), UID: uid})
}

// SubscribeRoom: this server has a subscriber in room.
func (e *Encoder) SubscribeRoom(appid, room int64) Record {
	return e.presence(RoomKey(appid, room), &schemas.Presence{Header: e.header(schemas.TypeSubscribeRoom, appid), RoomID: room})
}

// UnsubscribeRoom: this server's last subscriber of room left.
func (e *Encoder) UnsubscribeRoom(appid, room int64) Record {
	return e.presence(RoomKey(appid, room), &schemas.Presence{Header: e.header(schemas.TypeUnsubscribeRoom, appid), RoomID: room})
}

// Server builds a lifecycle event (server_up, heartbeat, server_down).
// Server events are not about one app; they carry appid 1 to satisfy the
// envelope (the presence stage keys server state by server id alone).
func (e *Encoder) Server(t schemas.Type) Record {
	return e.presence(ServerKey(e.server), &schemas.Presence{Header: e.header(t, 1)})
}

// Meta carries the optional per-message fields of a publish event.
type Meta struct {
	MsgID    int64
	DeviceID int64
	// IMRTimestamp is imr's route timestamp (ns); the gateway sets it so
	// that it can write deliveries back byte-for-byte.
	IMRTimestamp int64
}

func (e *Encoder) publish(t schemas.Type, appid, receiver int64, key string, msg schemas.Message, meta Meta) Record {
	ev := schemas.Publish{Header: e.header(t, appid), Receiver: receiver,
		MsgID: meta.MsgID, DeviceID: meta.DeviceID, IMRTimestamp: meta.IMRTimestamp, Msg: msg, Route: e.route}
	return e.record(e.topics.Publish, key, &ev)
}

// Publish routes a peer message to receiver.
func (e *Encoder) Publish(appid, receiver int64, msg schemas.Message, meta Meta) Record {
	return e.publish(schemas.TypePublish, appid, receiver, UserKey(appid, receiver), msg, meta)
}

// PublishGroup routes a group message.
func (e *Encoder) PublishGroup(appid, group int64, msg schemas.Message, meta Meta) Record {
	return e.publish(schemas.TypePublishGroup, appid, group, GroupKey(appid, group), msg, meta)
}

// PublishRoom routes a room message.
func (e *Encoder) PublishRoom(appid, room int64, msg schemas.Message, meta Meta) Record {
	return e.publish(schemas.TypePublishRoom, appid, room, RoomKey(appid, room), msg, meta)
}

// Broadcast routes msg to every connected user of appid (o: which ones,
// and whether this server's own users too), on the online lane.
func (e *Encoder) Broadcast(appid int64, msg schemas.Message, o BroadcastOptions) Record {
	ev := schemas.Publish{Header: e.header(schemas.TypePublishBroadcast, appid), ExcludeOrigin: o.ExcludeOrigin, Msg: msg}
	if o.AllConnected {
		ev.OnlineOnly = new(bool)
	}
	return e.record(e.topics.Publish, BroadcastKey(appid), &ev)
}

// Push asks for offline pushes to whichever receivers are offline (MSG_PUSH),
// on the bulk lane; keyed by the first receiver. receivers must not be empty.
func (e *Encoder) Push(appid int64, receivers []int64, msg schemas.Message) Record {
	ev := schemas.Publish{Header: e.header(schemas.TypePush, appid), Receivers: receivers, Msg: msg, Route: e.route}
	return e.record(e.topics.Bulk, UserKey(appid, receivers[0]), &ev)
}
