package schemas

import (
	"encoding/base64"
	"strconv"
	"unicode/utf8"
)

// AppendJSON appends the job's JSON to b: the same bytes as json.Marshal,
// without reflection (the fanout writes one per offline receiver set).
func (j *PushJob) AppendJSON(b []byte) []byte {
	b = j.Header.appendJSON(b)
	b = append(b, `,"receivers":`...)
	if j.Receivers == nil {
		b = append(b, "null"...)
	} else {
		b = appendInts(b, j.Receivers)
	}
	b = j.Msg.appendJSON(append(b, `,"msg":`...))
	b = j.Src.appendJSON(b)
	if len(j.MemberRange) > 0 {
		b = appendInts(append(b, `,"member_range":`...), j.MemberRange)
	}
	return append(b, '}')
}

// AppendPushJobs appends a push_jobs record holding the encoded push_job
// records jobs, in order, under header h (its type is set to push_jobs).
func AppendPushJobs(b []byte, h Header, jobs [][]byte) []byte {
	h.Type = TypePushJobs
	b = append(h.appendJSON(b), `,"jobs":[`...)
	for i, j := range jobs {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, j...)
	}
	return append(b, "]}"...)
}

// AppendJSON appends the event's JSON to b: the same bytes as json.Marshal,
// without reflection (the gateway and the ingest producer encode one per
// event; json.Marshal was a quarter of the gateway's CPU).
func (p *Publish) AppendJSON(b []byte) []byte {
	b = p.Header.appendJSON(b)
	b = appendField(b, "receiver", p.Receiver, true)
	b = appendField(b, "msgid", p.MsgID, true)
	b = appendField(b, "device_id", p.DeviceID, true)
	if len(p.Receivers) > 0 {
		b = appendInts(append(b, `,"receivers":`...), p.Receivers)
	}
	if p.OnlineOnly != nil {
		b = strconv.AppendBool(append(b, `,"online_only":`...), *p.OnlineOnly)
	}
	if p.ExcludeOrigin {
		b = append(b, `,"exclude_origin":true`...)
	}
	b = p.Msg.appendJSON(append(b, `,"msg":`...))
	b = p.Src.appendJSON(b)
	b = appendField(b, "imr_timestamp", p.IMRTimestamp, true)
	if p.Route != "" {
		b = AppendString(append(b, `,"route":`...), p.Route)
	}
	return append(b, '}')
}

// AppendJSON appends the event's JSON to b: the same bytes as
// json.Marshal.
func (p *Presence) AppendJSON(b []byte) []byte {
	b = p.Header.appendJSON(b)
	b = appendField(b, "epoch", p.Epoch, false)
	b = appendField(b, "uid", p.UID, true)
	if p.Online != nil {
		b = strconv.AppendBool(append(b, `,"online":`...), *p.Online)
	}
	b = appendField(b, "room_id", p.RoomID, true)
	return append(b, '}')
}

// appendInts appends vs as a JSON array.
func appendInts(b []byte, vs []int64) []byte {
	b = append(b, '[')
	for i, v := range vs {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, v, 10)
	}
	return append(b, ']')
}

// appendJSON appends ,"src":{…}; nothing for a nil source.
func (s *Source) appendJSON(b []byte) []byte {
	if s == nil {
		return b
	}
	b = AppendString(append(b, `,"src":{"topic":`...), s.Topic)
	b = appendField(b, "partition", int64(s.Partition), false)
	b = appendField(b, "offset", s.Offset, false)
	b = appendField(b, "index", int64(s.Index), true)
	if s.Inc != "" {
		b = AppendString(append(b, `,"inc":`...), s.Inc)
	}
	return append(b, '}')
}

// appendJSON appends the header's fields, opening the object.
func (h *Header) appendJSON(b []byte) []byte {
	b = strconv.AppendInt(append(b, `{"v":`...), int64(h.V), 10)
	b = AppendString(append(b, `,"type":`...), string(h.Type))
	b = AppendString(append(b, `,"server":`...), h.Server)
	b = appendField(b, "appid", h.AppID, false)
	b = appendField(b, "ts", h.TS, true)
	if h.ID != "" {
		b = AppendString(append(b, `,"id":`...), h.ID)
	}
	return b
}

func (m *Message) appendJSON(b []byte) []byte {
	b = strconv.AppendInt(append(b, `{"cmd":`...), int64(m.Cmd), 10)
	b = appendField(b, "flag", int64(m.Flag), true)
	b = appendField(b, "version", int64(m.Version), true)
	b = appendField(b, "seq", m.Seq, true)
	b = appendField(b, "sender", m.Sender, true)
	b = appendField(b, "receiver", m.Receiver, true)
	b = appendField(b, "timestamp", m.Timestamp, true)
	b = appendField(b, "msgid", m.MsgID, true)
	if m.Content != "" {
		b = AppendString(append(b, `,"content":`...), m.Content)
	}
	if m.Notification != "" {
		b = AppendString(append(b, `,"notification":`...), m.Notification)
	}
	b = appendField(b, "customer_appid", m.CustomerAppID, true)
	b = appendField(b, "customer_id", m.CustomerID, true)
	b = appendField(b, "store_id", m.StoreID, true)
	b = appendField(b, "seller_id", m.SellerID, true)
	b = appendField(b, "sync_key", m.SyncKey, true)
	b = appendField(b, "group_id", m.GroupID, true)
	b = appendField(b, "sender_appid", m.SenderAppID, true)
	b = appendField(b, "receiver_appid", m.ReceiverAppID, true)
	if len(m.Raw) > 0 {
		b = append(b, `,"raw":"`...)
		b = base64.StdEncoding.AppendEncode(b, m.Raw)
		b = append(b, '"')
	}
	return append(b, '}')
}

// appendField appends ,"name":v (nothing when omitEmpty and v is 0).
func appendField(b []byte, name string, v int64, omitEmpty bool) []byte {
	if omitEmpty && v == 0 {
		return b
	}
	b = append(append(append(b, ',', '"'), name...), '"', ':')
	return strconv.AppendInt(b, v, 10)
}

const hex = "0123456789abcdef"

// AppendString appends s as a JSON string: encoding/json's string encoder with HTML escaping on (the
// json.Marshal default): the same bytes for every input, including invalid
// UTF-8 (→ \ufffd) and U+2028/U+2029.
func AppendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if b := s[i]; b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' && b != '<' && b != '>' && b != '&' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '\\', '"':
				dst = append(dst, '\\', b)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[b>>4], hex[b&0xF])
			}
			i++
			start = i
			continue
		}
		c, size := utf8.DecodeRuneInString(s[i:])
		if c == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if c == '\u2028' || c == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hex[c&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
