package schemas

// Version is the only event format version this package accepts.
const Version = 1

// DefaultMaxBytes is the default size limit of one record (docs/protocol.md §2).
const DefaultMaxBytes = 64 << 10

// Type names an event type (the "type" field).
type Type string

// Presence event types (topic imr.presence).
const (
	TypeSubscribe       Type = "subscribe"
	TypeUnsubscribe     Type = "unsubscribe"
	TypeSubscribeRoom   Type = "subscribe_room"
	TypeUnsubscribeRoom Type = "unsubscribe_room"
	TypeServerUp        Type = "server_up"
	TypeHeartbeat       Type = "heartbeat"
	TypeServerDown      Type = "server_down"
)

// Publish event types (topic imr.publish).
const (
	TypePublish      Type = "publish"
	TypePublishGroup Type = "publish_group"
	TypePublishRoom  Type = "publish_room"
	TypePush         Type = "push"
	// TypePublishBroadcast is a message to every connected user of an app:
	// one deliver record per live IM server hosting a present user of it.
	TypePublishBroadcast Type = "publish_broadcast"
)

// Group event types (topic imr.groups).
const (
	TypeGroupCreate       Type = "group_create"
	TypeGroupDisband      Type = "group_disband"
	TypeGroupMemberAdd    Type = "group_member_add"
	TypeGroupMemberRemove Type = "group_member_remove"
	TypeGroupMemberMute   Type = "group_member_mute"
	TypeGroupUpgrade      Type = "group_upgrade"
)

// TypePushJob is the pusher's input record (topic imr.push), written by the
// fanout.
const TypePushJob Type = "push_job"

// TypePushJobs is a record of many push jobs (topic imr.push): the fanout
// writes the jobs of one batch and source partition together.
const TypePushJobs Type = "push_jobs"

// Kind is the family of an event type; each family has its own topic and Go
// type.
type Kind int

const (
	KindUnknown Kind = iota
	KindPresence
	KindPublish
	KindGroup
	KindPushJob
)

func (k Kind) String() string {
	switch k {
	case KindPresence:
		return "presence"
	case KindPublish:
		return "publish"
	case KindGroup:
		return "group"
	case KindPushJob:
		return "push_job"
	}
	return "unknown"
}

// Kind returns the family of t, KindUnknown when t is not a v1 type.
func (t Type) Kind() Kind {
	switch t {
	case TypeSubscribe, TypeUnsubscribe, TypeSubscribeRoom, TypeUnsubscribeRoom,
		TypeServerUp, TypeHeartbeat, TypeServerDown:
		return KindPresence
	case TypePublish, TypePublishGroup, TypePublishRoom, TypePush, TypePublishBroadcast:
		return KindPublish
	case TypeGroupCreate, TypeGroupDisband, TypeGroupMemberAdd, TypeGroupMemberRemove,
		TypeGroupMemberMute, TypeGroupUpgrade:
		return KindGroup
	case TypePushJob, TypePushJobs:
		return KindPushJob
	}
	return KindUnknown
}

// Header holds the fields every event carries.
type Header struct {
	V      int    `json:"v"`
	Type   Type   `json:"type"`
	Server string `json:"server"`       // origin IM server id, [A-Za-z0-9._-]{1,64}
	AppID  int64  `json:"appid"`        // > 0
	TS     int64  `json:"ts,omitempty"` // unix ms at origin, for latency
	ID     string `json:"id,omitempty"` // unique id for tracing and de-duplication
}

// Head returns the common header; it lets all event types share one interface.
func (h *Header) Head() *Header { return h }

// Event is any decoded v1 event: *Presence, *Publish, *Group, *PushJob or
// *PushJobs.
type Event interface {
	Head() *Header
}

// Presence is a presence event: subscribe, unsubscribe, subscribe_room,
// unsubscribe_room, server_up, heartbeat, server_down.
type Presence struct {
	Header
	Epoch  int64 `json:"epoch"`             // origin server's start id, > 0
	UID    int64 `json:"uid,omitempty"`     // subscribe, unsubscribe
	Online *bool `json:"online,omitempty"`  // subscribe
	RoomID int64 `json:"room_id,omitempty"` // subscribe_room, unsubscribe_room
}

// IsOnline reports the subscribe event's online flag (false when absent).
func (p *Presence) IsOnline() bool { return p.Online != nil && *p.Online }

// Source names the Kafka record an output record was derived from, so a
// consumer can drop a repeat.
type Source struct {
	Topic     string `json:"topic"`
	Partition int    `json:"partition"`
	Offset    int64  `json:"offset"`
	// Index numbers the outputs derived from one source record (0, 1, …)
	// where a record yields several push jobs; with Offset it orders them.
	Index int `json:"index,omitempty"`
	// Inc is the incarnation of the source partition's log ("" for the
	// first one a deployment read before incarnations existed): offsets of
	// different incarnations are not comparable. See docs/reliability.md.
	Inc string `json:"inc,omitempty"`
}

// Stream names the source stream the offset counts in: the topic, qualified
// by the incarnation when there is one ("topic@inc"). A consumer that drops
// repeats keeps one highest offset per (Stream, Partition).
func (s *Source) Stream() string { return StreamOf(s.Topic, s.Inc) }

// StreamOf is Source.Stream for a topic and incarnation.
func StreamOf(topic, inc string) string {
	if inc == "" {
		return topic
	}
	return topic + "@" + inc
}

// Publish is a publish, publish_group, publish_room or push event. Deliver
// records on imr.deliver.<server> are Publish events with Src set.
type Publish struct {
	Header
	Receiver  int64   `json:"receiver,omitempty"`  // uid, group_id or room_id; publish*
	MsgID     int64   `json:"msgid,omitempty"`     // publish*
	DeviceID  int64   `json:"device_id,omitempty"` // publish*
	Receivers []int64 `json:"receivers,omitempty"` // push
	// OnlineOnly (publish_broadcast; absent: true): IM servers deliver the
	// message to their connected users of the app that are online; false:
	// to every connected user of the app, online or not.
	OnlineOnly *bool `json:"online_only,omitempty"`
	// ExcludeOrigin (publish_broadcast): no delivery to the IM server
	// named by server.
	ExcludeOrigin bool    `json:"exclude_origin,omitempty"`
	Msg           Message `json:"msg"`
	Src           *Source `json:"src,omitempty"` // set on deliver records
	// IMRTimestamp is imr's route timestamp (ns) of an event that came
	// through the gateway, echoed back on delivery.
	IMRTimestamp int64 `json:"imr_timestamp,omitempty"`
	// Route names the rules the event is routed by: "" those of
	// docs/protocol.md §4; RouteIMR those of im_service's router (what
	// the gateway writes by default): publish, publish_group and
	// publish_room are forwarded as they are and never pushed, push
	// follows imr's MSG_PUSH.
	Route string `json:"route,omitempty"`
}

// RouteIMR is Publish.Route for events routed by im_service's router's
// rules (docs/protocol.md §4).
const RouteIMR = "imr"

// OnlineUsersOnly reports whether a broadcast goes only to online users
// (online_only, absent: true).
func (p *Publish) OnlineUsersOnly() bool { return p.OnlineOnly == nil || *p.OnlineOnly }

// Group is a group event from the app backend.
type Group struct {
	Header
	GroupID int64   `json:"group_id"`
	Super   bool    `json:"super,omitempty"`   // group_create, group_upgrade
	Members []int64 `json:"members,omitempty"` // group_create
	UID     int64   `json:"uid,omitempty"`     // group_member_*
	Mute    bool    `json:"mute,omitempty"`    // group_member_mute
}

// PushJob is the pusher's input record on imr.push: the offline receivers of
// one message. The pusher turns it into docs/protocol.md §5 entries: one group entry for
// GROUP_IM, one entry per receiver otherwise.
type PushJob struct {
	Header
	Receivers []int64 `json:"receivers"`
	Msg       Message `json:"msg"`
	Src       *Source `json:"src,omitempty"` // the publish event it came from
	// MemberRange [from, to] makes the job's receivers the members of the
	// GROUP_IM's group (msg.receiver) with from <= uid < to (to 0: no
	// bound), minus msg.sender, that are offline when the pusher writes:
	// a big group's message, whose members the fanout does not look up
	// (docs/topics.md). Receivers is then empty.
	MemberRange []int64 `json:"member_range,omitempty"`
}

// PushJobs is a record of many push jobs on imr.push, in order: the fanout
// writes the jobs of one batch and source partition as one record, so that
// the pusher reads one record per batch instead of one per job. The header
// is the first job's; each job is a whole push_job record.
type PushJobs struct {
	Header
	Jobs []*PushJob `json:"jobs"`
}
