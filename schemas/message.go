package schemas

// Inner message commands (im_service numbering, docs/protocol.md §2).
const (
	CmdIM              = 4
	CmdGroupNotify     = 7
	CmdGroupIM         = 8
	CmdRT              = 17
	CmdRoomIM          = 20
	CmdSystem          = 21
	CmdCustomer        = 24
	CmdCustomerSupport = 25
	CmdSyncNotify      = 29
	CmdSyncGroupNotify = 33
	CmdCustomerV2      = 64
)

// Message flags.
const (
	FlagText         = 0x01
	FlagUnpersistent = 0x02
	FlagGroup        = 0x04
	FlagSelf         = 0x08
	FlagPush         = 0x10
	FlagSuperGroup   = 0x20
)

// Message is the inner IM message of a publish event: the command, its flags
// and the decoded fields the router needs; Raw keeps the exact inner frame
// (base64 in JSON) so it can be forwarded untouched.
type Message struct {
	Cmd     int   `json:"cmd"`
	Flag    int   `json:"flag,omitempty"`
	Version int   `json:"version,omitempty"`
	Seq     int64 `json:"seq,omitempty"`

	// IM, GROUP_IM, RT, ROOM_IM, CUSTOMER_V2
	Sender    int64  `json:"sender,omitempty"`
	Receiver  int64  `json:"receiver,omitempty"`
	Timestamp int64  `json:"timestamp,omitempty"`
	MsgID     int64  `json:"msgid,omitempty"`
	Content   string `json:"content,omitempty"`

	// GROUP_NOTIFICATION, SYSTEM
	Notification string `json:"notification,omitempty"`

	// CUSTOMER, CUSTOMER_SUPPORT
	CustomerAppID int64 `json:"customer_appid,omitempty"`
	CustomerID    int64 `json:"customer_id,omitempty"`
	StoreID       int64 `json:"store_id,omitempty"`
	SellerID      int64 `json:"seller_id,omitempty"`

	// SYNC_NOTIFY, SYNC_GROUP_NOTIFY
	SyncKey int64 `json:"sync_key,omitempty"`
	GroupID int64 `json:"group_id,omitempty"`

	// CUSTOMER_V2
	SenderAppID   int64 `json:"sender_appid,omitempty"`
	ReceiverAppID int64 `json:"receiver_appid,omitempty"`

	Raw []byte `json:"raw,omitempty"`
}

// Persistent reports whether the message is stored and pulled by clients
// (cmd in {4, 8, 21, 24, 25, 64} without UNPERSISTENT); the fanout does not
// forward persistent messages.
func (m *Message) Persistent() bool {
	switch m.Cmd {
	case CmdIM, CmdGroupIM, CmdSystem, CmdCustomer, CmdCustomerSupport, CmdCustomerV2:
		return m.Flag&FlagUnpersistent == 0
	}
	return false
}

// Pushable reports whether an offline receiver of this message gets a push
// entry (docs/protocol.md §4–§5). SYSTEM is pushable; whether it is pushed is the
// pusher's system_push setting.
func (m *Message) Pushable() bool {
	switch m.Cmd {
	case CmdIM, CmdGroupIM, CmdSystem, CmdCustomer, CmdCustomerSupport, CmdCustomerV2:
		return true
	}
	return false
}

// KnownCmd reports whether cmd is one of the inner commands of docs/protocol.md §2.
func KnownCmd(cmd int) bool {
	switch cmd {
	case CmdIM, CmdGroupNotify, CmdGroupIM, CmdRT, CmdRoomIM, CmdSystem, CmdCustomer,
		CmdCustomerSupport, CmdSyncNotify, CmdSyncGroupNotify, CmdCustomerV2:
		return true
	}
	return false
}
