package fanout

import (
	"context"
	"time"

	"github.com/imstream/imstream/schemas"
	"github.com/imstream/imstream/store"
)

type appUser struct{ appid, id int64 }

// batchView is a View filled by a few pipelined look-ups per batch.
type batchView struct {
	users   map[appUser]store.UserPresence
	rooms   map[appUser][]string
	apps    map[int64][]string // servers hosting each broadcast's app
	groups  map[appUser]*store.Group
	members map[appUser][]store.UserPresence // a group's members' presence, in member order
	live    []string
	at      time.Time // when the presence read judged leases (store.PresenceStore.JudgedAt)
}

func (v *batchView) User(appid, uid int64) store.UserPresence { return v.users[appUser{appid, uid}] }
func (v *batchView) Room(appid, room int64) []string          { return v.rooms[appUser{appid, room}] }
func (v *batchView) Group(appid, gid int64) *store.Group      { return v.groups[appUser{appid, gid}] }
func (v *batchView) LiveServers() []string                    { return v.live }
func (v *batchView) AppServers(appid int64) []string          { return v.apps[appid] }

// Members implements MemberView.
func (v *batchView) Members(appid, gid int64) []store.UserPresence {
	return v.members[appUser{appid, gid}]
}

// load reads everything the events' decisions need: groups first (their
// members are users to look up), then all users of each app in one
// pipeline, the rooms, and the live servers when asked for. A group's
// members are looked up in member order, once per group and batch, and
// kept as a slice beside the group, so that deciding a group message costs
// no map look-up per member.
func load(ctx context.Context, evs []*schemas.Publish, ps store.PresenceStore, gs store.GroupStore, o Options, now time.Time) (*batchView, error) {
	l := &loader{ps: ps, gs: gs, o: o, now: now, want: map[int64]map[int64]struct{}{}, v: &batchView{users: map[appUser]store.UserPresence{},
		rooms: map[appUser][]string{}, apps: map[int64][]string{}, groups: map[appUser]*store.Group{}, members: map[appUser][]store.UserPresence{}}}
	at, err := ps.JudgedAt(ctx, now)
	if err != nil {
		return nil, err
	}
	l.v.at = at
	for _, ev := range evs {
		if err := l.add(ctx, ev); err != nil {
			return nil, err
		}
	}
	// One look-up per app: its receivers, then its groups' members.
	for _, k := range l.resolve {
		l.addUsers(k.appid)
	}
	for appid, set := range l.want {
		if err := l.users(ctx, appid, set); err != nil {
			return nil, err
		}
	}
	if l.needLive {
		live, err := ps.LiveServers(ctx, now)
		if err != nil {
			return nil, err
		}
		l.v.live = live
	}
	return l.v, nil
}

// loader gathers what one batch's decisions need into v.
type loader struct {
	ps       store.PresenceStore
	gs       store.GroupStore
	o        Options
	now      time.Time
	v        *batchView
	resolve  []appUser                    // groups whose members to look up, each once
	want     map[int64]map[int64]struct{} // appid → uids
	needLive bool
}

func (l *loader) addUsers(appid int64, uids ...int64) {
	s := l.want[appid]
	if s == nil {
		s = map[int64]struct{}{}
		l.want[appid] = s
	}
	for _, uid := range uids {
		s[uid] = struct{}{}
	}
}

// add notes the users ev's decision needs and reads its group or room.
func (l *loader) add(ctx context.Context, ev *schemas.Publish) error {
	switch ev.Type {
	case schemas.TypePublish:
		l.addUsers(ev.AppID, ev.Receiver)
	case schemas.TypePush:
		l.addUsers(ev.AppID, ev.Receivers...)
	case schemas.TypePublishGroup:
		if ev.Route == schemas.RouteIMR { // every live server: no group
			l.needLive = true
			return nil
		}
		return l.addGroup(ctx, ev)
	case schemas.TypePublishRoom:
		k := appUser{ev.AppID, ev.Receiver}
		if _, ok := l.v.rooms[k]; !ok {
			servers, err := l.ps.Room(ctx, ev.AppID, ev.Receiver, l.now)
			if err != nil {
				return err
			}
			l.v.rooms[k] = servers
		}
	case schemas.TypePublishBroadcast:
		if _, ok := l.v.apps[ev.AppID]; !ok {
			servers, err := l.ps.AppServers(ctx, ev.AppID, l.now)
			if err != nil {
				return err
			}
			l.v.apps[ev.AppID] = servers
		}
	}
	return nil
}

func (l *loader) addGroup(ctx context.Context, ev *schemas.Publish) error {
	cmd := ev.Msg.Cmd
	if cmd != schemas.CmdGroupIM && cmd != schemas.CmdSyncGroupNotify {
		return nil
	}
	toLive := cmd == schemas.CmdSyncGroupNotify && l.o.SyncGroupNotifyAll
	l.needLive = l.needLive || toLive
	k := appUser{ev.AppID, ev.Receiver}
	g, ok := l.v.groups[k]
	if !ok {
		var err error
		if g, err = l.gs.Group(ctx, ev.AppID, ev.Receiver); err != nil {
			return err
		}
		l.v.groups[k] = g
	}
	if g != nil && !toLive && !(cmd == schemas.CmdGroupIM && l.o.Big(g)) { // a big group's GROUP_IM: Plan.BigGroup
		if _, ok := l.v.members[k]; !ok {
			l.v.members[k] = nil
			l.resolve = append(l.resolve, k)
		}
	}
	return nil
}

// users looks up app appid's receivers and its groups' members in one call.
func (l *loader) users(ctx context.Context, appid int64, set map[int64]struct{}) error {
	uids := make([]int64, 0, len(set))
	for uid := range set {
		uids = append(uids, uid)
	}
	peers := len(uids)
	for _, k := range l.resolve {
		if k.appid == appid {
			uids = append(uids, l.v.groups[k].Members...)
		}
	}
	res, err := store.UsersBy(ctx, l.ps, appid, uids, l.now, l.o.GroupChunk)
	if err != nil {
		return err
	}
	for i, uid := range uids[:peers] {
		l.v.users[appUser{appid, uid}] = res[i]
	}
	at := peers
	for _, k := range l.resolve {
		if k.appid == appid {
			n := len(l.v.groups[k].Members)
			l.v.members[k] = res[at : at+n : at+n]
			at += n
		}
	}
	return nil
}
