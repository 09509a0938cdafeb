package imr

import "encoding/binary"

// Subscribe is the body of 130 SUBSCRIBE.
type Subscribe struct {
	AppID, UID int64
	Online     int8
}

// ID is the body of 131 UNSUBSCRIBE (AppID, UID) and of 136/137
// (UN)SUBSCRIBE_ROOM (AppID, room id).
type ID struct {
	AppID, ID int64
}

// Route is the body of 132 PUBLISH, 135 PUBLISH_GROUP and 138 PUBLISH_ROOM.
type Route struct {
	AppID, Receiver, MsgID, DeviceID int64
	Timestamp                        int64 // ns, set by the IM server
	Inner                            []byte
}

// Push is the body of 134 PUSH (MSG_PUSH).
type Push struct {
	AppID     int64
	Receivers []int64
	Inner     []byte
}

// ParseSubscribe parses a 130 body.
func ParseSubscribe(b []byte) (Subscribe, error) {
	r := reader{b: b}
	s := Subscribe{AppID: r.i64(), UID: r.i64(), Online: int8(r.u8())}
	if r.err {
		return Subscribe{}, frameErr("subscribe body of %d bytes, want 17", len(b))
	}
	return s, nil
}

// ParseID parses a 131, 136 or 137 body.
func ParseID(b []byte) (ID, error) {
	r := reader{b: b}
	id := ID{AppID: r.i64(), ID: r.i64()}
	if r.err {
		return ID{}, frameErr("id body of %d bytes, want 16", len(b))
	}
	return id, nil
}

// ParseRoute parses a 132, 135 or 138 body. Inner aliases b.
func ParseRoute(b []byte) (Route, error) {
	r := reader{b: b}
	rt := Route{AppID: r.i64(), Receiver: r.i64(), MsgID: r.i64(), DeviceID: r.i64(), Timestamp: r.i64()}
	n := int16(r.u16())
	rt.Inner = r.bytes(int(n))
	if r.err {
		return Route{}, frameErr("route body of %d bytes: inner length %d does not fit", len(b), n)
	}
	return rt, nil
}

// ParsePush parses a 134 body. Inner aliases b.
func ParsePush(b []byte) (Push, error) {
	r := reader{b: b}
	p := Push{AppID: r.i64()}
	count := int(r.u16())
	if !r.err && len(r.b) < count*8+2 {
		return Push{}, frameErr("push body of %d bytes cannot hold %d receivers", len(b), count)
	}
	p.Receivers = make([]int64, count)
	for i := range p.Receivers {
		p.Receivers[i] = r.i64()
	}
	n := int16(r.u16())
	p.Inner = r.bytes(int(n))
	if r.err {
		return Push{}, frameErr("push body of %d bytes: inner length %d does not fit", len(b), n)
	}
	return p, nil
}

// AppendSubscribe, AppendID, AppendRoute and AppendPush encode bodies.
func AppendSubscribe(dst []byte, s Subscribe) []byte {
	dst = binary.BigEndian.AppendUint64(dst, uint64(s.AppID))
	dst = binary.BigEndian.AppendUint64(dst, uint64(s.UID))
	return append(dst, byte(s.Online))
}

// AppendID encodes a 131/136/137 body.
func AppendID(dst []byte, id ID) []byte {
	dst = binary.BigEndian.AppendUint64(dst, uint64(id.AppID))
	return binary.BigEndian.AppendUint64(dst, uint64(id.ID))
}

// AppendRoute encodes a 132/135/138 body.
func AppendRoute(dst []byte, r Route) []byte {
	for _, v := range []int64{r.AppID, r.Receiver, r.MsgID, r.DeviceID, r.Timestamp} {
		dst = binary.BigEndian.AppendUint64(dst, uint64(v))
	}
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(r.Inner)))
	return append(dst, r.Inner...)
}

// AppendPush encodes a 134 body.
func AppendPush(dst []byte, p Push) []byte {
	dst = binary.BigEndian.AppendUint64(dst, uint64(p.AppID))
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(p.Receivers)))
	for _, r := range p.Receivers {
		dst = binary.BigEndian.AppendUint64(dst, uint64(r))
	}
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(p.Inner)))
	return append(dst, p.Inner...)
}
