package fanout

import (
	"strconv"

	"github.com/imstream/imstream/schemas"
	"github.com/imstream/imstream/store"
)

// View is what a routing decision reads: the presence of the users, rooms
// and servers it asks about, and groups. A batch builds one View with
// pipelined look-ups.
type View interface {
	User(appid, uid int64) store.UserPresence
	Room(appid, room int64) []string
	Group(appid, gid int64) *store.Group
	LiveServers() []string
	// AppServers are the live servers hosting present users of appid.
	AppServers(appid int64) []string
}

// MemberView is a View that also knows a group's members' presence in the
// order of Group(appid, gid).Members; Decide then walks that slice instead
// of asking User per member.
type MemberView interface {
	View
	Members(appid, gid int64) []store.UserPresence
}

// Plan is what to do with one publish event.
type Plan struct {
	Deliver []string  // servers to forward the event to (never the origin)
	Push    [][]int64 // push jobs, each the offline receivers of one job
	// BigGroup is set for a GROUP_IM to a big group (Options.Big): its
	// members' presence is not looked up here; it goes to the pusher as
	// member-range jobs, which resolve the members offline when it writes.
	BigGroup *store.Group
	Skip     string // why nothing (or less) was done, for metrics: "", "unknown_group", "not_pushable"
	// Present are the servers the decision found (the receiver's, the
	// room's, the members', the app's, or every live one), the origin
	// included: Deliver is Present without the origin.
	Present []string
}

// Options are the routing switches.
type Options struct {
	// SyncGroupNotifyAll forwards SYNC_GROUP_NOTIFY to every live server
	// (im_service) instead of only where a member is present.
	SyncGroupNotifyAll bool
	// GroupChunk: a GROUP_IM to a group of more members than this (0: no
	// limit) is not decided member by member (Plan.BigGroup).
	GroupChunk int
}

// Big reports whether a GROUP_IM to g leaves its members' presence to the
// pusher.
func (o Options) Big(g *store.Group) bool { return o.GroupChunk > 0 && len(g.Members) > o.GroupChunk }

// Decide applies docs/protocol.md §4 (im_service's HandlePublish, HandlePublishGroup,
// HandlePublishRoom and MSG_PUSH) to one event.
func Decide(ev *schemas.Publish, v View, o Options) Plan {
	if ev.Route == schemas.RouteIMR {
		return decideIMR(ev, v)
	}
	var p Plan
	m := &ev.Msg
	switch ev.Type {
	case schemas.TypePublish:
		u := v.User(ev.AppID, ev.Receiver)
		if !u.Online && m.Pushable() {
			p.Push = [][]int64{{ev.Receiver}}
		}
		p.Present = u.Servers
		if !m.Persistent() {
			p.Deliver = except(u.Servers, ev.Server)
		}
	case schemas.TypePublishGroup:
		g := v.Group(ev.AppID, ev.Receiver)
		if m.Cmd == schemas.CmdSyncGroupNotify && o.SyncGroupNotifyAll {
			p.Present = v.LiveServers()
			p.Deliver = except(p.Present, ev.Server)
		}
		if g == nil {
			p.Skip = "unknown_group"
			return p
		}
		var pres []store.UserPresence
		if mv, ok := v.(MemberView); ok {
			if pres = mv.Members(ev.AppID, ev.Receiver); len(pres) != len(g.Members) {
				pres = nil
			}
		}
		member := func(i int) store.UserPresence {
			if pres != nil {
				return pres[i]
			}
			return v.User(ev.AppID, g.Members[i])
		}
		switch m.Cmd {
		case schemas.CmdGroupIM:
			if o.Big(g) {
				p.BigGroup = g
				break
			}
			var off []int64
			for i, uid := range g.Members {
				if uid != m.Sender && !member(i).Online {
					off = append(off, uid)
				}
			}
			if len(off) > 0 {
				p.Push = [][]int64{off}
			}
		case schemas.CmdSyncGroupNotify:
			if !o.SyncGroupNotifyAll {
				var servers []string
				for i := range g.Members {
					servers = union(servers, member(i).Servers)
				}
				p.Present = servers
				p.Deliver = except(servers, ev.Server)
			}
		}
	case schemas.TypePublishRoom:
		p.Present = v.Room(ev.AppID, ev.Receiver)
		p.Deliver = except(p.Present, ev.Server)
	case schemas.TypePublishBroadcast:
		p.Present = v.AppServers(ev.AppID)
		p.Deliver = p.Present
		if ev.ExcludeOrigin {
			p.Deliver = except(p.Deliver, ev.Server)
		}
	case schemas.TypePush:
		if !m.Pushable() {
			p.Skip = "not_pushable"
			return p
		}
		off := offline(v, ev.AppID, ev.Receivers)
		if len(off) > 0 {
			p.Push = [][]int64{off} // GROUP_IM: one group entry; others: an entry per receiver
		}
	}
	return p
}

// decideIMR applies im_service's router's rules (router/server.go at
// im_service 365d982; docs/protocol.md §4, route "imr"): a publish goes to
// the servers where the receiver is present, a group publish to every
// live server, a room publish to the servers with the room — never back
// to the origin, never pushed, whatever the inner command. A push writes,
// when a receiver is offline, what imr's push service does: GROUP_IM one
// group entry for the offline receivers, IM and CUSTOMER_V2 one entry for
// the message's receiver, SYSTEM one for the first offline receiver;
// nothing for other commands.
func decideIMR(ev *schemas.Publish, v View) Plan {
	var p Plan
	m := &ev.Msg
	switch ev.Type {
	case schemas.TypePublish:
		p.Present = v.User(ev.AppID, ev.Receiver).Servers
	case schemas.TypePublishGroup:
		p.Present = v.LiveServers()
	case schemas.TypePublishRoom:
		p.Present = v.Room(ev.AppID, ev.Receiver)
	case schemas.TypePush:
		switch m.Cmd {
		case schemas.CmdIM, schemas.CmdGroupIM, schemas.CmdSystem, schemas.CmdCustomerV2:
		default:
			p.Skip = "not_pushable"
			return p
		}
		off := offline(v, ev.AppID, ev.Receivers)
		switch {
		case len(off) == 0:
		case m.Cmd == schemas.CmdGroupIM:
			p.Push = [][]int64{off}
		case m.Cmd == schemas.CmdSystem:
			p.Push = [][]int64{off[:1]}
		default:
			p.Push = [][]int64{{m.Receiver}}
		}
		return p
	}
	p.Deliver = except(p.Present, ev.Server)
	return p
}

// offline returns the uids of appid that are not online.
func offline(v View, appid int64, uids []int64) []int64 {
	var off []int64
	for _, uid := range uids {
		if !v.User(appid, uid).Online {
			off = append(off, uid)
		}
	}
	return off
}

// except returns servers without origin (servers is not modified).
func except(servers []string, origin string) []string {
	var out []string
	for _, s := range servers {
		if s != origin {
			out = append(out, s)
		}
	}
	return out
}

// union adds the servers of add missing from set (small sets: linear).
func union(set, add []string) []string {
next:
	for _, s := range add {
		for _, x := range set {
			if x == s {
				continue next
			}
		}
		set = append(set, s)
	}
	return set
}

// Decision headers, on every delivery and push job record (docs/protocol.md
// §6): the rule the fanout applied with what it read (AppendDescribe), and the
// presence snapshot it read — the time presence had applied the log
// through (store.PresenceStore.JudgedAt) — so that a trace shows why
// without asking presence again, which has changed since.
const (
	HeaderDecision   = "imstream-decision"
	HeaderPresenceAt = "imstream-presence-at"
)

// AppendDescribe appends p, the plan Decide made for ev reading v, as the
// decision header says it to dst: the rule, then what it read, as
// key=value words.
//
//	peer present=s1,s2 online=true      publish: the receiver's servers and online flag
//	group members=5 offline=3           GROUP_IM: members, offline ones (the sender excluded)
//	group members=100000 offline=pusher a big group: the pusher resolves who is offline
//	group unknown                       a group the group store does not know
//	group_notify present=s1             SYNC_GROUP_NOTIFY: servers where a member is present
//	group_notify live=s1,s2,s3          the same, sent to every live server
//	room present=s1                     publish_room: servers with the room's subscribers
//	broadcast present=s1,s2             publish_broadcast: servers hosting the app
//	push receivers=2 offline=1          MSG_PUSH
//	group live=s1,s2 route=imr          an event routed by imr's rules (route "imr") says so last;
//	                                    its publish_group goes to every live server
//
// A list of more than describedServers servers names the first ones and
// counts the rest: present=s1,s2,s3,s4,s5,s6,s7,s8,+12.
//
// The origin server is left out of the deliveries, not of present.
func AppendDescribe(dst []byte, ev *schemas.Publish, p Plan, v View, o Options) []byte {
	offline := 0
	for _, j := range p.Push {
		offline += len(j)
	}
	switch ev.Type {
	case schemas.TypePublish:
		dst = appendServers(append(dst, "peer"...), " present=", p.Present)
		dst = strconv.AppendBool(append(dst, " online="...), v.User(ev.AppID, ev.Receiver).Online)
	case schemas.TypePublishGroup:
		g := v.Group(ev.AppID, ev.Receiver)
		switch {
		case ev.Route == schemas.RouteIMR:
			dst = appendServers(append(dst, "group"...), " live=", p.Present)
		case ev.Msg.Cmd == schemas.CmdSyncGroupNotify && o.SyncGroupNotifyAll:
			dst = appendServers(append(dst, "group_notify"...), " live=", p.Present)
		case ev.Msg.Cmd == schemas.CmdSyncGroupNotify:
			dst = appendServers(append(dst, "group_notify"...), " present=", p.Present)
		case g == nil:
			dst = append(dst, "group unknown"...)
		default:
			dst = strconv.AppendInt(append(dst, "group members="...), int64(len(g.Members)), 10)
			if p.BigGroup != nil {
				dst = append(dst, " offline=pusher"...)
			} else {
				dst = strconv.AppendInt(append(dst, " offline="...), int64(offline), 10)
			}
		}
	case schemas.TypePublishRoom:
		dst = appendServers(append(dst, "room"...), " present=", p.Present)
	case schemas.TypePublishBroadcast:
		dst = appendServers(append(dst, "broadcast"...), " present=", p.Present)
	case schemas.TypePush:
		dst = strconv.AppendInt(append(dst, "push receivers="...), int64(len(ev.Receivers)), 10)
		dst = strconv.AppendInt(append(dst, " offline="...), int64(offline), 10)
	default:
		dst = append(dst, ev.Type...)
	}
	if ev.Route != "" {
		dst = append(append(dst, " route="...), ev.Route...)
	}
	return dst
}

// describedServers is how many servers a decision header names; more are
// counted ("s1,…,s8,+992"): a broadcast's header is on each of its
// deliveries, and a deployment may have a thousand servers.
const describedServers = 8

// appendServers appends key and servers, comma-separated.
func appendServers(dst []byte, key string, servers []string) []byte {
	dst = append(dst, key...)
	for i, s := range servers {
		if i > 0 {
			dst = append(dst, ',')
		}
		if i == describedServers {
			return strconv.AppendInt(append(dst, '+'), int64(len(servers)-i), 10)
		}
		dst = append(dst, s...)
	}
	return dst
}
