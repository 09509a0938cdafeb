package schemas

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// wire is the union of every v1 event's fields, so a record is parsed once
// whatever its type.
type wire struct {
	Header
	Epoch       int64             `json:"epoch"`
	UID         int64             `json:"uid"`
	Online      *bool             `json:"online"`
	RoomID      int64             `json:"room_id"`
	Receiver    int64             `json:"receiver"`
	MsgID       int64             `json:"msgid"`
	DeviceID    int64             `json:"device_id"`
	Receivers   []int64           `json:"receivers"`
	OnlineOnly  *bool             `json:"online_only"`
	ExclOrigin  bool              `json:"exclude_origin"`
	Msg         *Message          `json:"msg"`
	Src         *Source           `json:"src"`
	IMRTS       int64             `json:"imr_timestamp"`
	Route       string            `json:"route"`
	GroupID     int64             `json:"group_id"`
	Super       bool              `json:"super"`
	Members     []int64           `json:"members"`
	Mute        bool              `json:"mute"`
	Jobs        []json.RawMessage `json:"jobs"`
	MemberRange []int64           `json:"member_range"`

	binary bool // read in the binary format: so are its jobs
}

// sized applies the size limit (maxBytes <= 0 means DefaultMaxBytes) and
// returns it.
func sized(data []byte, maxBytes int) (int, error) {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBytes
	}
	if len(data) > maxBytes {
		return maxBytes, fieldErr("record", ReasonOversize,
			fmt.Sprintf("%d bytes exceeds the limit of %d", len(data), maxBytes))
	}
	return maxBytes, nil
}

// Decode parses and validates one v1 record of at most maxBytes bytes
// (maxBytes <= 0 means DefaultMaxBytes). It returns *Presence, *Publish,
// *Group or *PushJob, or an *Error naming the offending field.
func Decode(data []byte, maxBytes int) (Event, error) {
	maxBytes, err := sized(data, maxBytes)
	if err != nil {
		return nil, err
	}
	var w wire
	var fastMsg Message // the fast path decodes msg here, on the stack; the event gets a copy
	ok, hasMsg := w.decodeFast(data, &fastMsg)
	msg := w.Msg
	if hasMsg {
		msg = &fastMsg
	} else if !ok {
		slow := new(wire) // json.Unmarshal's argument escapes; w stays on the stack
		if err := json.Unmarshal(data, slow); err != nil {
			return nil, jsonError(string(slow.Type), err)
		}
		w = *slow
		msg = w.Msg
	}
	return w.event(msg, maxBytes)
}

// event validates the decoded fields and builds the event.
func (w *wire) event(msg *Message, maxBytes int) (Event, error) {
	if err := w.validateHeader(); err != nil {
		return nil, err
	}
	switch w.Type.Kind() {
	case KindPresence:
		return w.presence()
	case KindPublish:
		return w.publish(msg)
	case KindGroup:
		return w.group()
	default:
		if w.Type == TypePushJobs {
			return w.pushJobs(maxBytes)
		}
		return w.pushJob(msg)
	}
}

// pushJobs decodes a record of push jobs: each element a whole push_job
// record, validated as one.
func (w *wire) pushJobs(maxBytes int) (Event, error) {
	t := string(w.Type)
	if len(w.Jobs) == 0 {
		return nil, fieldErr(t+".jobs", ReasonInvalid, "must not be empty")
	}
	out := &PushJobs{Header: w.Header, Jobs: make([]*PushJob, len(w.Jobs))}
	decode := Decode
	if w.binary {
		decode = DecodeBinary
	}
	for i, raw := range w.Jobs {
		ev, err := decode(raw, maxBytes)
		if err == nil && ev.Head().Type != TypePushJob {
			err = fieldErr(string(ev.Head().Type)+".type", ReasonWrongKind, "a push_jobs record holds push_job records")
		}
		if err != nil {
			var e *Error
			if errors.As(err, &e) {
				e.Path = t + ".jobs[" + strconv.Itoa(i) + "]." + e.Path
			}
			return nil, err
		}
		out.Jobs[i] = ev.(*PushJob)
	}
	return out, nil
}

// DecodeKind is Decode for a topic that carries one family of events: a
// record of another family is rejected with ReasonWrongKind.
func DecodeKind(data []byte, maxBytes int, want Kind) (Event, error) {
	return DecodeKindFormat(data, maxBytes, want, "")
}

// DecodeKindFormat is DecodeKind for a record whose HeaderFormat header
// has the value format: "" (no header) is JSON, FormatBinary the binary
// format; any other value is rejected with ReasonInvalid.
func DecodeKindFormat(data []byte, maxBytes int, want Kind, format string) (Event, error) {
	decode := Decode
	switch format {
	case "":
	case FormatBinary:
		decode = DecodeBinary
	default:
		return nil, fieldErr("record", ReasonInvalid, fmt.Sprintf("unknown record format %q (header %q)", truncate(format), HeaderFormat))
	}
	ev, err := decode(data, maxBytes)
	if err != nil {
		return nil, err
	}
	if t := ev.Head().Type; t.Kind() != want {
		return nil, fieldErr(string(t)+".type", ReasonWrongKind,
			fmt.Sprintf("a %s event does not belong on a %s topic", t.Kind(), want))
	}
	return ev, nil
}

func jsonError(typ string, err error) *Error {
	prefix := typ
	if Type(typ).Kind() == KindUnknown {
		prefix = "record"
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		path := prefix
		if f := strings.TrimPrefix(te.Field, "Header."); f != "" {
			path += "." + f // the embedded Header is not part of the wire path
		}
		return fieldErr(path, ReasonWrongType, fmt.Sprintf("want %s, got %s", goTypeName(te.Type.String()), te.Value))
	}
	var be base64.CorruptInputError
	if errors.As(err, &be) {
		// raw is the only base64 field.
		return fieldErr(prefix+".msg.raw", ReasonWrongType, fmt.Sprintf("invalid base64 at byte %d", int64(be)))
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fieldErr("record", ReasonInvalidJSON, fmt.Sprintf("invalid JSON at byte %d: %v", se.Offset, se))
	}
	return fieldErr("record", ReasonInvalidJSON, err.Error())
}

func goTypeName(t string) string {
	switch {
	case strings.HasPrefix(t, "int"), strings.HasPrefix(t, "uint"):
		return "integer"
	case strings.HasPrefix(t, "[]uint8"):
		return "base64 string"
	case strings.HasPrefix(t, "[]"):
		return "array"
	case t == "bool" || t == "*bool":
		return "boolean"
	case t == "string", t == "schemas.Type":
		return "string"
	}
	return "object"
}

func validServer(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// ValidServerID reports whether s is a valid IM server id ([A-Za-z0-9._-]{1,64}).
func ValidServerID(s string) bool { return validServer(s) }

func (w *wire) validateHeader() error {
	switch {
	case w.V == 0:
		return required("record.v")
	case w.V != Version:
		return fieldErr("record.v", ReasonVersion, fmt.Sprintf("unsupported version %d", w.V))
	case w.Type == "":
		return required("record.type")
	case w.Type.Kind() == KindUnknown:
		return fieldErr("record.type", ReasonUnknownType, fmt.Sprintf("unknown type %q", truncate(string(w.Type))))
	}
	t := string(w.Type)
	if w.Server == "" {
		return required(t + ".server")
	}
	if !validServer(w.Server) {
		return fieldErr(t+".server", ReasonInvalid, "must match [A-Za-z0-9._-]{1,64}")
	}
	if err := positive(t, "appid", w.AppID); err != nil {
		return err
	}
	if w.TS < 0 {
		return fieldErr(t+".ts", ReasonInvalid, "must be >= 0")
	}
	return nil
}

func truncate(s string) string {
	if len(s) > 32 {
		return s[:32] + "..."
	}
	return s
}

func (w *wire) presence() (Event, error) {
	c := checker{t: string(w.Type)}
	p := &Presence{Header: w.Header, Epoch: w.Epoch}
	c.positive("epoch", w.Epoch)
	switch w.Type {
	case TypeSubscribe:
		c.present("online", w.Online != nil)
		p.Online = w.Online
		fallthrough
	case TypeUnsubscribe:
		c.positive("uid", w.UID)
		p.UID = w.UID
	case TypeSubscribeRoom, TypeUnsubscribeRoom:
		c.positive("room_id", w.RoomID)
		p.RoomID = w.RoomID
	}
	return c.result(p)
}

func (w *wire) publish(msg *Message) (Event, error) {
	c := checker{t: string(w.Type)}
	p := &Publish{Header: w.Header, Receiver: w.Receiver, MsgID: w.MsgID, DeviceID: w.DeviceID, Src: w.Src, IMRTimestamp: w.IMRTS, Route: w.Route}
	c.valid("route", w.Route == "" || w.Route == RouteIMR && w.Type != TypePublishBroadcast, `must be absent or "imr" (not on publish_broadcast)`)
	switch w.Type {
	case TypePush:
		c.receivers(w.Receivers)
		p.Receivers = w.Receivers
	case TypePublishBroadcast:
		p.OnlineOnly, p.ExcludeOrigin = w.OnlineOnly, w.ExclOrigin
	default:
		c.positive("receiver", w.Receiver)
	}
	if w.Route == RouteIMR && w.Type != TypePush {
		c.opaque(msg) // forwarded as it is: any inner command
	} else {
		c.msg(msg)
	}
	c.source(w.Src)
	if c.err == nil {
		p.Msg = *msg
		p.Msg.Raw = canonicalRaw(p.Msg.Raw)
	}
	return c.result(p)
}

func (w *wire) group() (Event, error) {
	c := checker{t: string(w.Type)}
	c.positive("group_id", w.GroupID)
	g := &Group{Header: w.Header, GroupID: w.GroupID}
	switch w.Type {
	case TypeGroupCreate:
		for _, m := range w.Members {
			c.valid("members", m > 0, "every member must be > 0")
		}
		g.Super = w.Super
		if len(w.Members) > 0 { // members: [] is no members, as when absent
			g.Members = w.Members
		}
	case TypeGroupUpgrade:
		g.Super = w.Super
	case TypeGroupMemberAdd, TypeGroupMemberRemove, TypeGroupMemberMute:
		c.positive("uid", w.UID)
		g.UID, g.Mute = w.UID, w.Mute
	}
	return c.result(g)
}

func (w *wire) pushJob(msg *Message) (Event, error) {
	c := checker{t: string(w.Type)}
	if w.MemberRange == nil {
		c.receivers(w.Receivers)
	} else {
		r := w.MemberRange
		c.valid("member_range", len(r) == 2 && r[0] >= 0 && (r[1] == 0 || r[1] > r[0]),
			"must be [from, to] with 0 <= from < to, or to 0 for no bound")
		c.valid("receivers", len(w.Receivers) == 0, "must be empty with member_range")
	}
	c.msg(msg)
	if c.err == nil && !msg.Pushable() {
		c.err = fieldErr(c.t+".msg.cmd", ReasonInvalid, fmt.Sprintf("cmd %d has no push list", msg.Cmd))
	}
	if c.err == nil && w.MemberRange != nil && msg.Cmd != CmdGroupIM {
		c.err = fieldErr(c.t+".msg.cmd", ReasonInvalid, fmt.Sprintf("member_range is for GROUP_IM (8), not cmd %d", msg.Cmd))
	}
	c.source(w.Src)
	if c.err != nil {
		return nil, c.err
	}
	j := &PushJob{Header: w.Header, Receivers: w.Receivers, Msg: *msg, Src: w.Src, MemberRange: w.MemberRange}
	j.Msg.Raw = canonicalRaw(j.Msg.Raw)
	return j, nil
}

// checker validates the fields of an event of type t in order and keeps
// the first error: each check after a failure does nothing, so that a
// validator reads as the list of its rules. Error paths are built only on
// failure (valid records are the hot path).
type checker struct {
	t   string
	err error
}

func (c *checker) set(err *Error) {
	if err != nil {
		c.err = err
	}
}

// positive: t.field must be > 0.
func (c *checker) positive(field string, v int64) {
	if c.err == nil && v <= 0 {
		c.set(positive(c.t, field, v))
	}
}

// present: t.field is required.
func (c *checker) present(field string, ok bool) {
	if c.err == nil && !ok {
		c.err = required(c.t + "." + field)
	}
}

// valid: t.field is invalid, as detail says, unless ok.
func (c *checker) valid(field string, ok bool, detail string) {
	if c.err == nil && !ok {
		c.err = fieldErr(c.t+"."+field, ReasonInvalid, detail)
	}
}

func (c *checker) receivers(rs []int64) {
	if c.err == nil {
		c.err = receivers(c.t, rs)
	}
}

// msg: the inner message is required and valid.
func (c *checker) msg(m *Message) {
	switch {
	case c.err != nil:
	case m == nil:
		c.err = required(c.t + ".msg")
	default:
		c.err = m.validate(c.t)
	}
}

// opaque: the inner message is required with its frame (raw), which is
// forwarded as it is whatever its command; the decoded fields are not
// checked.
func (c *checker) opaque(m *Message) {
	switch {
	case c.err != nil:
	case m == nil:
		c.err = required(c.t + ".msg")
	case len(m.Raw) == 0:
		c.err = required(c.t + ".msg.raw")
	case m.Cmd < 0 || m.Cmd > 0xff || m.Flag < 0 || m.Flag > 0xff:
		c.err = fieldErr(c.t+".msg", ReasonInvalid, "cmd and flag must be 0..255")
	}
}

func (c *checker) source(s *Source) {
	if c.err == nil {
		c.err = validSource(c.t, s)
	}
}

// result is e, or the first error.
func (c *checker) result(e Event) (Event, error) {
	if c.err != nil {
		return nil, c.err
	}
	return e, nil
}

// canonicalRaw makes an empty raw frame ("raw": "") the same as none, so a
// decoded event re-encodes (raw is omitempty) to the same event.
func canonicalRaw(raw []byte) []byte {
	if len(raw) == 0 {
		return nil
	}
	return raw
}

func validSource(typ string, s *Source) error {
	if s == nil {
		return nil
	}
	path := func(f string) string { return typ + ".src." + f } // only for an error: the happy path builds no string
	switch {
	case s.Topic == "":
		return required(path("topic"))
	case s.Partition < 0:
		return fieldErr(path("partition"), ReasonInvalid, "must be >= 0")
	case s.Offset < 0 || s.Offset >= 1<<37:
		return fieldErr(path("offset"), ReasonInvalid, "must be 0..2^37")
	case s.Index < 0 || s.Index > 0xffff:
		return fieldErr(path("index"), ReasonInvalid, "must be 0..65535")
	case len(s.Inc) > 64:
		return fieldErr(path("inc"), ReasonInvalid, "must be at most 64 bytes")
	}
	return nil
}

func receivers(typ string, rs []int64) error {
	if len(rs) == 0 {
		return required(typ + ".receivers")
	}
	for _, r := range rs {
		if r <= 0 {
			return fieldErr(typ+".receivers", ReasonInvalid, "every receiver must be > 0")
		}
	}
	return nil
}

// validate checks the inner message of an event of type typ; error paths
// are built only on failure.
func (m *Message) validate(typ string) error {
	if m.Cmd == 0 {
		return required(typ + ".msg.cmd")
	}
	if !KnownCmd(m.Cmd) {
		return fieldErr(typ+".msg.cmd", ReasonInvalid, fmt.Sprintf("unknown cmd %d", m.Cmd))
	}
	if m.Flag < 0 || m.Flag > 0xff {
		return fieldErr(typ+".msg.flag", ReasonInvalid, "must be 0..255")
	}
	check := func(name string, v int64) error {
		if v > 0 {
			return nil
		}
		return positive(typ+".msg", name, v)
	}
	var err error
	switch m.Cmd {
	case CmdIM, CmdGroupIM, CmdRT, CmdRoomIM:
		if err = check("sender", m.Sender); err == nil {
			err = check("receiver", m.Receiver)
		}
	case CmdCustomer, CmdCustomerSupport:
		if err = check("customer_appid", m.CustomerAppID); err == nil {
			err = check("customer_id", m.CustomerID)
		}
	case CmdCustomerV2:
		for _, f := range []struct {
			name string
			v    int64
		}{{"sender_appid", m.SenderAppID}, {"sender", m.Sender}, {"receiver_appid", m.ReceiverAppID}, {"receiver", m.Receiver}} {
			if err = check(f.name, f.v); err != nil {
				break
			}
		}
	case CmdSyncGroupNotify:
		err = check("group_id", m.GroupID)
	}
	if err != nil {
		return err
	}
	return nil
}
