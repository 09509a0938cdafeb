package schemas

import "strconv"

// ReasonKeyMismatch rejects a record whose Kafka key is not the key its
// body calls for: its events would sit on another partition than the rest
// of the same user's, group's or room's, and their order would be lost.
const ReasonKeyMismatch = "key_mismatch"

// AppendKey appends the Kafka key an event must carry (docs/protocol.md,
// "Topics and keys") and reports whether the event kind has such a rule:
//
//	subscribe, unsubscribe, publish, push   "<appid>:<uid>" (push: the first receiver)
//	subscribe_room, unsubscribe_room,
//	publish_room                            "<appid>:room:<room_id>"
//	publish_group                           "<appid>:group:<group_id>"
//	server_up, heartbeat, server_down       "server:<server>"
//	group events (imr.groups)               "<appid>:<group_id>"
//
// Push jobs are keyed by the fanout and have no rule.
func AppendKey(dst []byte, ev Event) ([]byte, bool) {
	user := func(appid, id int64) []byte {
		return strconv.AppendInt(append(strconv.AppendInt(dst, appid, 10), ':'), id, 10)
	}
	tagged := func(appid int64, tag string, id int64) []byte {
		return strconv.AppendInt(append(append(strconv.AppendInt(dst, appid, 10), ':'), tag...), id, 10)
	}
	switch e := ev.(type) {
	case *Presence:
		switch e.Type {
		case TypeSubscribe, TypeUnsubscribe:
			return user(e.AppID, e.UID), true
		case TypeSubscribeRoom, TypeUnsubscribeRoom:
			return tagged(e.AppID, "room:", e.RoomID), true
		default:
			return append(append(dst, "server:"...), e.Server...), true
		}
	case *Publish:
		switch e.Type {
		case TypePublishGroup:
			return tagged(e.AppID, "group:", e.Receiver), true
		case TypePublishRoom:
			return tagged(e.AppID, "room:", e.Receiver), true
		case TypePublishBroadcast:
			return append(append(strconv.AppendInt(dst, e.AppID, 10), ':'), "broadcast"...), true
		case TypePush:
			if len(e.Receivers) == 0 {
				return dst, false
			}
			return user(e.AppID, e.Receivers[0]), true
		default:
			return user(e.AppID, e.Receiver), true
		}
	case *Group:
		return user(e.AppID, e.GroupID), true
	}
	return dst, false
}
