package fanout

import (
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
	var p Plan
	m := &ev.Msg
	switch ev.Type {
	case schemas.TypePublish:
		u := v.User(ev.AppID, ev.Receiver)
		if !u.Online && m.Pushable() {
			p.Push = [][]int64{{ev.Receiver}}
		}
		if !m.Persistent() {
			p.Deliver = except(u.Servers, ev.Server)
		}
	case schemas.TypePublishGroup:
		g := v.Group(ev.AppID, ev.Receiver)
		if m.Cmd == schemas.CmdSyncGroupNotify && o.SyncGroupNotifyAll {
			p.Deliver = except(v.LiveServers(), ev.Server)
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
				p.Deliver = except(servers, ev.Server)
			}
		}
	case schemas.TypePublishRoom:
		p.Deliver = except(v.Room(ev.AppID, ev.Receiver), ev.Server)
	case schemas.TypePublishBroadcast:
		p.Deliver = v.AppServers(ev.AppID)
		if ev.ExcludeOrigin {
			p.Deliver = except(p.Deliver, ev.Server)
		}
	case schemas.TypePush:
		if !m.Pushable() {
			p.Skip = "not_pushable"
			return p
		}
		var off []int64
		for _, uid := range ev.Receivers {
			if !v.User(ev.AppID, uid).Online {
				off = append(off, uid)
			}
		}
		if len(off) > 0 {
			p.Push = [][]int64{off} // GROUP_IM: one group entry; others: an entry per receiver
		}
	}
	return p
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
