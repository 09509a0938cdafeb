package schemas

import (
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
)

// The binary format: the same v1 events as Protocol Buffers messages
// (docs/protocol.md §2, "The binary format", gives the .proto), written by imstream for its own
// readers — the gateway's events and the fanout's push jobs — where
// decoding JSON was a quarter of the roles' CPU. A record in it carries the
// Kafka header HeaderFormat with the value FormatBinary; a record without
// the header is JSON. Decoding fills the same fields as the JSON decoder and
// validates them with the same rules, so a record means the same in either
// format. Integers are sint64 (zigzag), so no field is larger than its JSON.

// HeaderFormat is the Kafka record header naming a record's format.
const HeaderFormat = "format"

// FormatBinary is HeaderFormat's value for the binary format.
const FormatBinary = "protobuf:imstream.v1.Event"

// Field numbers of message Event.
const (
	fV            = 1
	fType         = 2
	fServer       = 3
	fAppID        = 4
	fTS           = 5
	fID           = 6
	fEpoch        = 7
	fUID          = 8
	fOnline       = 9
	fRoomID       = 10
	fReceiver     = 11
	fMsgID        = 12
	fDeviceID     = 13
	fReceivers    = 14
	fMsg          = 15
	fSrc          = 16
	fIMRTimestamp = 17
	fGroupID      = 18
	fSuper        = 19
	fMembers      = 20
	fMute         = 21
	fJobs         = 22
	fMemberRange  = 23
	fOnlineOnly   = 24
	fExclOrigin   = 25
	fRoute        = 26
)

// Field numbers of message Message.
const (
	mCmd           = 1
	mFlag          = 2
	mVersion       = 3
	mSeq           = 4
	mSender        = 5
	mReceiver      = 6
	mTimestamp     = 7
	mMsgID         = 8
	mContent       = 9
	mNotification  = 10
	mCustomerAppID = 11
	mCustomerID    = 12
	mStoreID       = 13
	mSellerID      = 14
	mSyncKey       = 15
	mGroupID       = 16
	mSenderAppID   = 17
	mReceiverAppID = 18
	mRaw           = 19
)

// Field numbers of message Source.
const (
	sTopic     = 1
	sPartition = 2
	sOffset    = 3
	sIndex     = 4
	sInc       = 5
)

func appendSint(b []byte, num protowire.Number, v int64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, protowire.EncodeZigZag(v))
}

// appendOptBool appends an optional bool: present (false too) when v is
// not nil.
func appendOptBool(b []byte, num protowire.Number, v *bool) []byte {
	if v == nil {
		return b
	}
	return protowire.AppendVarint(protowire.AppendTag(b, num, protowire.VarintType), protowire.EncodeBool(*v))
}

func appendBool(b []byte, num protowire.Number, v bool) []byte {
	if !v {
		return b
	}
	return protowire.AppendVarint(protowire.AppendTag(b, num, protowire.VarintType), 1)
}

func appendStr(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	return protowire.AppendString(protowire.AppendTag(b, num, protowire.BytesType), s)
}

// appendPacked writes vs as a packed repeated sint64, also when empty but
// not nil (JSON's [] against an absent field).
func appendPacked(b []byte, num protowire.Number, vs []int64) []byte {
	if vs == nil {
		return b
	}
	n := 0
	for _, v := range vs {
		n += protowire.SizeVarint(protowire.EncodeZigZag(v))
	}
	b = protowire.AppendVarint(protowire.AppendTag(b, num, protowire.BytesType), uint64(n))
	for _, v := range vs {
		b = protowire.AppendVarint(b, protowire.EncodeZigZag(v))
	}
	return b
}

// appendNested writes a length-delimited field whose body fill appends,
// reserving room for a length of up to 3 bytes (2 MiB) and moving the body
// when the length needs fewer or more.
func appendNested(b []byte, num protowire.Number, fill func([]byte) []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	at := len(b)
	b = append(b, 0, 0, 0)
	b = fill(b)
	n := len(b) - at - 3
	size := protowire.SizeVarint(uint64(n))
	if size > 3 {
		b = append(b, make([]byte, size-3)...)
	}
	if size != 3 {
		copy(b[at+size:], b[at+3:at+3+n])
		b = b[:at+size+n]
	}
	protowire.AppendVarint(b[at:at], uint64(n))
	return b
}

func (h *Header) appendBinary(b []byte) []byte {
	b = appendSint(b, fV, int64(h.V))
	b = appendStr(b, fType, string(h.Type))
	b = appendStr(b, fServer, h.Server)
	b = appendSint(b, fAppID, h.AppID)
	b = appendSint(b, fTS, h.TS)
	return appendStr(b, fID, h.ID)
}

func (m *Message) appendBinary(b []byte) []byte {
	b = appendSint(b, mCmd, int64(m.Cmd))
	b = appendSint(b, mFlag, int64(m.Flag))
	b = appendSint(b, mVersion, int64(m.Version))
	b = appendSint(b, mSeq, m.Seq)
	b = appendSint(b, mSender, m.Sender)
	b = appendSint(b, mReceiver, m.Receiver)
	b = appendSint(b, mTimestamp, m.Timestamp)
	b = appendSint(b, mMsgID, m.MsgID)
	b = appendStr(b, mContent, m.Content)
	b = appendStr(b, mNotification, m.Notification)
	b = appendSint(b, mCustomerAppID, m.CustomerAppID)
	b = appendSint(b, mCustomerID, m.CustomerID)
	b = appendSint(b, mStoreID, m.StoreID)
	b = appendSint(b, mSellerID, m.SellerID)
	b = appendSint(b, mSyncKey, m.SyncKey)
	b = appendSint(b, mGroupID, m.GroupID)
	b = appendSint(b, mSenderAppID, m.SenderAppID)
	b = appendSint(b, mReceiverAppID, m.ReceiverAppID)
	if len(m.Raw) > 0 {
		b = protowire.AppendBytes(protowire.AppendTag(b, mRaw, protowire.BytesType), m.Raw)
	}
	return b
}

func (s *Source) appendBinary(b []byte) []byte {
	if s == nil {
		return b
	}
	return appendNested(b, fSrc, func(b []byte) []byte {
		b = appendStr(b, sTopic, s.Topic)
		b = appendSint(b, sPartition, int64(s.Partition))
		b = appendSint(b, sOffset, s.Offset)
		b = appendSint(b, sIndex, int64(s.Index))
		return appendStr(b, sInc, s.Inc)
	})
}

// AppendBinary appends the event in the binary format.
func (p *Publish) AppendBinary(b []byte) []byte {
	b = p.Header.appendBinary(b)
	b = appendSint(b, fReceiver, p.Receiver)
	b = appendSint(b, fMsgID, p.MsgID)
	b = appendSint(b, fDeviceID, p.DeviceID)
	if len(p.Receivers) > 0 {
		b = appendPacked(b, fReceivers, p.Receivers)
	}
	b = appendNested(b, fMsg, p.Msg.appendBinary)
	b = p.Src.appendBinary(b)
	b = appendSint(b, fIMRTimestamp, p.IMRTimestamp)
	b = appendOptBool(b, fOnlineOnly, p.OnlineOnly)
	b = appendBool(b, fExclOrigin, p.ExcludeOrigin)
	return appendStr(b, fRoute, p.Route)
}

// AppendBinary appends the job in the binary format.
func (j *PushJob) AppendBinary(b []byte) []byte {
	b = j.Header.appendBinary(b)
	b = appendPacked(b, fReceivers, j.Receivers)
	b = appendNested(b, fMsg, j.Msg.appendBinary)
	b = j.Src.appendBinary(b)
	return appendPacked(b, fMemberRange, j.MemberRange)
}

// AppendBinary appends the event in the binary format.
func (p *Presence) AppendBinary(b []byte) []byte {
	b = p.Header.appendBinary(b)
	b = appendSint(b, fEpoch, p.Epoch)
	b = appendSint(b, fUID, p.UID)
	b = appendOptBool(b, fOnline, p.Online)
	return appendSint(b, fRoomID, p.RoomID)
}

// AppendPushJobsBinary is AppendPushJobs in the binary format: jobs are
// push_job records in the binary format.
func AppendPushJobsBinary(b []byte, h Header, jobs [][]byte) []byte {
	h.Type = TypePushJobs
	b = h.appendBinary(b)
	for _, j := range jobs {
		b = protowire.AppendBytes(protowire.AppendTag(b, fJobs, protowire.BytesType), j)
	}
	return b
}

// DecodeBinary is Decode for a record in the binary format.
func DecodeBinary(data []byte, maxBytes int) (Event, error) {
	maxBytes, err := sized(data, maxBytes)
	if err != nil {
		return nil, err
	}
	var w wire
	var msg Message
	hasMsg, err := w.decodeBinary(data, &msg)
	if err != nil {
		return nil, err
	}
	w.binary = true
	if !hasMsg {
		return w.event(nil, maxBytes)
	}
	return w.event(&msg, maxBytes) // msg stays on the stack: the event gets a copy
}

// binaryError is the error of a record that is not a valid binary event.
func binaryError(path, detail string) *Error {
	return fieldErr(path, ReasonInvalid, "binary format: "+detail)
}

// nextField reads the tag at the start of data: the field's number, wire
// type and the rest of data after the tag.
func nextField(data []byte, path string) (protowire.Number, protowire.Type, []byte, error) {
	num, typ, n := protowire.ConsumeTag(data)
	if n < 0 {
		return 0, 0, nil, binaryError(path, protowire.ParseError(n).Error())
	}
	return num, typ, data[n:], nil
}

// skipField consumes the value of a field a reader does not know (a newer
// writer's addition), or finishes a known one: used is what its reader
// consumed, 0 for an unknown field.
func skipField(num protowire.Number, typ protowire.Type, data []byte, used int, path string) ([]byte, error) {
	if used == 0 {
		used = protowire.ConsumeFieldValue(num, typ, data)
	}
	if used < 0 {
		return nil, binaryError(path, fmt.Sprintf("field %d: %v", num, protowire.ParseError(used)))
	}
	return data[used:], nil
}

// sint reads a sint64 field into *p.
func sint(typ protowire.Type, v []byte, path string, p *int64) (int, error) {
	if typ != protowire.VarintType {
		return 0, binaryError(path, "want a varint")
	}
	x, n := protowire.ConsumeVarint(v)
	if n < 0 {
		return n, nil
	}
	*p = protowire.DecodeZigZag(x)
	return n, nil
}

// sintInt is sint into an int, refusing values an int does not hold.
func sintInt(typ protowire.Type, v []byte, path string, p *int) (int, error) {
	var x int64
	n, err := sint(typ, v, path, &x)
	if int64(int(x)) != x {
		return 0, binaryError(path, "out of range")
	}
	*p = int(x)
	return n, err
}

// boolean reads a bool field into *p.
// optBoolean reads an optional bool into a new *bool.
func optBoolean(typ protowire.Type, v []byte, path string, p **bool) (int, error) {
	var on bool
	n, err := boolean(typ, v, path, &on)
	*p = &on
	return n, err
}

func boolean(typ protowire.Type, v []byte, path string, p *bool) (int, error) {
	if typ != protowire.VarintType {
		return 0, binaryError(path, "want a varint")
	}
	x, n := protowire.ConsumeVarint(v)
	*p = x != 0
	return n, nil
}

// bytesField reads a length-delimited field.
func bytesField(typ protowire.Type, v []byte, path string) ([]byte, int, error) {
	if typ != protowire.BytesType {
		return nil, 0, binaryError(path, "want a length-delimited field")
	}
	b, n := protowire.ConsumeBytes(v)
	if n < 0 {
		return nil, 0, binaryError(path, protowire.ParseError(n).Error())
	}
	return b, n, nil
}

// str reads a string field through the name cache when few values are
// expected (types, servers, topics).
func str(typ protowire.Type, v []byte, path string, p *string, cached bool) (int, error) {
	b, n, err := bytesField(typ, v, path)
	if err != nil {
		return 0, err
	}
	if cached {
		*p = names.get(b)
	} else {
		*p = string(b)
	}
	return n, nil
}

// ints reads a repeated sint64, packed or not, appending to *p (non-nil
// also when empty, as JSON's []).
func ints(typ protowire.Type, v []byte, path string, p *[]int64) (int, error) {
	if *p == nil {
		*p = []int64{}
	}
	if typ == protowire.VarintType {
		x, n := protowire.ConsumeVarint(v)
		if n >= 0 {
			*p = append(*p, protowire.DecodeZigZag(x))
		}
		return n, nil
	}
	b, n, err := bytesField(typ, v, path)
	if err != nil {
		return 0, err
	}
	if len(*p) == 0 {
		*p = make([]int64, 0, len(b)) // at most one value a byte
	}
	for len(b) > 0 {
		x, m := protowire.ConsumeVarint(b)
		if m < 0 {
			return 0, binaryError(path, protowire.ParseError(m).Error())
		}
		*p = append(*p, protowire.DecodeZigZag(x))
		b = b[m:]
	}
	return n, nil
}

func (w *wire) decodeBinary(data []byte, msg *Message) (hasMsg bool, err error) {
	for len(data) > 0 {
		var num protowire.Number
		var typ protowire.Type
		var v []byte
		if num, typ, v, err = nextField(data, "record"); err != nil {
			return false, err
		}
		n := 0
		switch num {
		case fV:
			n, err = sintInt(typ, v, "record.v", &w.V)
		case fType:
			var t string
			n, err = str(typ, v, "record.type", &t, true)
			w.Type = Type(t)
		case fServer:
			n, err = str(typ, v, "record.server", &w.Server, true)
		case fAppID:
			n, err = sint(typ, v, "record.appid", &w.AppID)
		case fTS:
			n, err = sint(typ, v, "record.ts", &w.TS)
		case fID:
			n, err = str(typ, v, "record.id", &w.ID, false)
		case fEpoch:
			n, err = sint(typ, v, "record.epoch", &w.Epoch)
		case fUID:
			n, err = sint(typ, v, "record.uid", &w.UID)
		case fOnline:
			n, err = optBoolean(typ, v, "record.online", &w.Online)
		case fRoomID:
			n, err = sint(typ, v, "record.room_id", &w.RoomID)
		case fReceiver:
			n, err = sint(typ, v, "record.receiver", &w.Receiver)
		case fMsgID:
			n, err = sint(typ, v, "record.msgid", &w.MsgID)
		case fDeviceID:
			n, err = sint(typ, v, "record.device_id", &w.DeviceID)
		case fReceivers:
			n, err = ints(typ, v, "record.receivers", &w.Receivers)
		case fMsg:
			var b []byte
			if b, n, err = bytesField(typ, v, "record.msg"); err == nil {
				hasMsg = true
				err = msg.decodeBinary(b)
			}
		case fSrc:
			var b []byte
			if b, n, err = bytesField(typ, v, "record.src"); err == nil {
				w.Src = new(Source)
				err = w.Src.decodeBinary(b)
			}
		case fIMRTimestamp:
			n, err = sint(typ, v, "record.imr_timestamp", &w.IMRTS)
		case fGroupID:
			n, err = sint(typ, v, "record.group_id", &w.GroupID)
		case fSuper:
			n, err = boolean(typ, v, "record.super", &w.Super)
		case fMembers:
			n, err = ints(typ, v, "record.members", &w.Members)
		case fMute:
			n, err = boolean(typ, v, "record.mute", &w.Mute)
		case fOnlineOnly:
			n, err = optBoolean(typ, v, "record.online_only", &w.OnlineOnly)
		case fExclOrigin:
			n, err = boolean(typ, v, "record.exclude_origin", &w.ExclOrigin)
		case fRoute:
			n, err = str(typ, v, "record.route", &w.Route, true)
		case fJobs:
			var b []byte
			if b, n, err = bytesField(typ, v, "record.jobs"); err == nil {
				w.Jobs = append(w.Jobs, b)
			}
		case fMemberRange:
			n, err = ints(typ, v, "record.member_range", &w.MemberRange)
		}
		if err != nil {
			return false, err
		}
		if data, err = skipField(num, typ, v, n, "record"); err != nil {
			return false, err
		}
	}
	return hasMsg, nil
}

func (m *Message) decodeBinary(data []byte) error {
	for len(data) > 0 {
		num, typ, v, err := nextField(data, "record.msg")
		if err != nil {
			return err
		}
		n := 0
		switch num {
		case mCmd:
			n, err = sintInt(typ, v, "record.msg.cmd", &m.Cmd)
		case mFlag:
			n, err = sintInt(typ, v, "record.msg.flag", &m.Flag)
		case mVersion:
			n, err = sintInt(typ, v, "record.msg.version", &m.Version)
		case mSeq:
			n, err = sint(typ, v, "record.msg.seq", &m.Seq)
		case mSender:
			n, err = sint(typ, v, "record.msg.sender", &m.Sender)
		case mReceiver:
			n, err = sint(typ, v, "record.msg.receiver", &m.Receiver)
		case mTimestamp:
			n, err = sint(typ, v, "record.msg.timestamp", &m.Timestamp)
		case mMsgID:
			n, err = sint(typ, v, "record.msg.msgid", &m.MsgID)
		case mContent:
			n, err = str(typ, v, "record.msg.content", &m.Content, false)
		case mNotification:
			n, err = str(typ, v, "record.msg.notification", &m.Notification, false)
		case mCustomerAppID:
			n, err = sint(typ, v, "record.msg.customer_appid", &m.CustomerAppID)
		case mCustomerID:
			n, err = sint(typ, v, "record.msg.customer_id", &m.CustomerID)
		case mStoreID:
			n, err = sint(typ, v, "record.msg.store_id", &m.StoreID)
		case mSellerID:
			n, err = sint(typ, v, "record.msg.seller_id", &m.SellerID)
		case mSyncKey:
			n, err = sint(typ, v, "record.msg.sync_key", &m.SyncKey)
		case mGroupID:
			n, err = sint(typ, v, "record.msg.group_id", &m.GroupID)
		case mSenderAppID:
			n, err = sint(typ, v, "record.msg.sender_appid", &m.SenderAppID)
		case mReceiverAppID:
			n, err = sint(typ, v, "record.msg.receiver_appid", &m.ReceiverAppID)
		case mRaw:
			var b []byte
			if b, n, err = bytesField(typ, v, "record.msg.raw"); err == nil {
				m.Raw = append([]byte(nil), b...)
			}
		}
		if err != nil {
			return err
		}
		if data, err = skipField(num, typ, v, n, "record.msg"); err != nil {
			return err
		}
	}
	return nil
}

func (s *Source) decodeBinary(data []byte) error {
	for len(data) > 0 {
		num, typ, v, err := nextField(data, "record.src")
		if err != nil {
			return err
		}
		n := 0
		switch num {
		case sTopic:
			n, err = str(typ, v, "record.src.topic", &s.Topic, true)
		case sPartition:
			n, err = sintInt(typ, v, "record.src.partition", &s.Partition)
		case sOffset:
			n, err = sint(typ, v, "record.src.offset", &s.Offset)
		case sIndex:
			n, err = sintInt(typ, v, "record.src.index", &s.Index)
		case sInc:
			n, err = str(typ, v, "record.src.inc", &s.Inc, true)
		}
		if err != nil {
			return err
		}
		if data, err = skipField(num, typ, v, n, "record.src"); err != nil {
			return err
		}
	}
	return nil
}
