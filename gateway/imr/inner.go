package imr

import (
	"encoding/binary"

	"github.com/imstream/imstream/schemas"
)

// ParseInner decodes an inner IM frame (header + body) into the v1 message
// fields, keeping the exact frame in Raw. Layouts (im_service):
//
//	IM, GROUP_IM v0     sender i64, receiver i64, msgid i32, content
//	IM, GROUP_IM v1, v2 sender i64, receiver i64, timestamp i32, msgid i32, content
//	RT, ROOM_IM         sender i64, receiver i64, content
//	GROUP_NOTIFICATION, SYSTEM   notification (the whole body)
//	CUSTOMER, CUSTOMER_SUPPORT   customer_appid i64, customer_id i64, store_id i64, seller_id i64, timestamp i32, content
//	SYNC_NOTIFY         sync_key i64
//	SYNC_GROUP_NOTIFY   group_id i64, sync_key i64
//	CUSTOMER_V2         sender_appid i64, sender i64, receiver_appid i64, receiver i64, timestamp i32, content
//
// An inner command outside docs/protocol.md §2's table is an ErrFrame.
func ParseInner(inner []byte) (schemas.Message, error) {
	if len(inner) < HeaderSize {
		return schemas.Message{}, frameErr("inner frame of %d bytes has no header", len(inner))
	}
	n := int32(binary.BigEndian.Uint32(inner[0:4]))
	if n < 0 || int(n) != len(inner)-HeaderSize {
		return schemas.Message{}, frameErr("inner frame declares %d body bytes, has %d", n, len(inner)-HeaderSize)
	}
	m := schemas.Message{
		Seq: int64(int32(binary.BigEndian.Uint32(inner[4:8]))), Cmd: int(inner[8]),
		Version: int(inner[9]), Flag: int(inner[10]), Raw: inner,
	}
	body := inner[HeaderSize:]
	r := reader{b: body}
	rest := func() string { s := string(r.b); r.b = nil; return s }
	switch m.Cmd {
	case schemas.CmdIM, schemas.CmdGroupIM:
		m.Sender, m.Receiver = r.i64(), r.i64()
		if m.Version >= 1 {
			m.Timestamp = int64(r.i32())
		}
		m.MsgID = int64(r.i32())
		m.Content = rest()
	case schemas.CmdRT, schemas.CmdRoomIM:
		m.Sender, m.Receiver = r.i64(), r.i64()
		m.Content = rest()
	case schemas.CmdGroupNotify, schemas.CmdSystem:
		m.Notification = rest()
	case schemas.CmdCustomer, schemas.CmdCustomerSupport:
		m.CustomerAppID, m.CustomerID, m.StoreID, m.SellerID = r.i64(), r.i64(), r.i64(), r.i64()
		m.Timestamp = int64(r.i32())
		m.Content = rest()
	case schemas.CmdSyncNotify:
		m.SyncKey = r.i64()
	case schemas.CmdSyncGroupNotify:
		m.GroupID, m.SyncKey = r.i64(), r.i64()
	case schemas.CmdCustomerV2:
		m.SenderAppID, m.Sender, m.ReceiverAppID, m.Receiver = r.i64(), r.i64(), r.i64(), r.i64()
		m.Timestamp = int64(r.i32())
		m.Content = rest()
	default:
		return schemas.Message{}, frameErr("inner cmd %d is not routable", m.Cmd)
	}
	if r.err {
		return schemas.Message{}, frameErr("inner cmd %d v%d: body of %d bytes too short", m.Cmd, m.Version, len(body))
	}
	return m, nil
}

// OpaqueInner is an inner frame that ParseInner refuses, as a message to
// forward as it is (gateway.rules imr, as imr does): its header's fields
// when it has a header, and the frame in Raw.
func OpaqueInner(inner []byte) schemas.Message {
	m := schemas.Message{Raw: inner}
	if len(inner) >= HeaderSize {
		m.Seq = int64(int32(binary.BigEndian.Uint32(inner[4:8])))
		m.Cmd, m.Version, m.Flag = int(inner[8]), int(inner[9]), int(inner[10])
	}
	return m
}

// AppendInner encodes a message as an inner frame (for load generators and
// tests; the gateway forwards Raw untouched).
func AppendInner(dst []byte, m schemas.Message) []byte {
	var body []byte
	switch m.Cmd {
	case schemas.CmdIM, schemas.CmdGroupIM:
		body = binary.BigEndian.AppendUint64(body, uint64(m.Sender))
		body = binary.BigEndian.AppendUint64(body, uint64(m.Receiver))
		if m.Version >= 1 {
			body = binary.BigEndian.AppendUint32(body, uint32(m.Timestamp))
		}
		body = binary.BigEndian.AppendUint32(body, uint32(m.MsgID))
		body = append(body, m.Content...)
	case schemas.CmdRT, schemas.CmdRoomIM:
		body = binary.BigEndian.AppendUint64(body, uint64(m.Sender))
		body = binary.BigEndian.AppendUint64(body, uint64(m.Receiver))
		body = append(body, m.Content...)
	case schemas.CmdGroupNotify, schemas.CmdSystem:
		body = append(body, m.Notification...)
	case schemas.CmdCustomer, schemas.CmdCustomerSupport:
		for _, v := range []int64{m.CustomerAppID, m.CustomerID, m.StoreID, m.SellerID} {
			body = binary.BigEndian.AppendUint64(body, uint64(v))
		}
		body = binary.BigEndian.AppendUint32(body, uint32(m.Timestamp))
		body = append(body, m.Content...)
	case schemas.CmdSyncNotify:
		body = binary.BigEndian.AppendUint64(body, uint64(m.SyncKey))
	case schemas.CmdSyncGroupNotify:
		body = binary.BigEndian.AppendUint64(body, uint64(m.GroupID))
		body = binary.BigEndian.AppendUint64(body, uint64(m.SyncKey))
	case schemas.CmdCustomerV2:
		for _, v := range []int64{m.SenderAppID, m.Sender, m.ReceiverAppID, m.Receiver} {
			body = binary.BigEndian.AppendUint64(body, uint64(v))
		}
		body = binary.BigEndian.AppendUint32(body, uint32(m.Timestamp))
		body = append(body, m.Content...)
	}
	return AppendFrame(dst, Frame{Seq: int32(m.Seq), Cmd: uint8(m.Cmd), Version: uint8(m.Version), Flag: uint8(m.Flag), Body: body})
}
