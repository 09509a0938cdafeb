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
	groups  map[appUser]*store.Group
	members map[appUser][]store.UserPresence // a group's members' presence, in member order
	live    []string
}

func (v *batchView) User(appid, uid int64) store.UserPresence { return v.users[appUser{appid, uid}] }
func (v *batchView) Room(appid, room int64) []string          { return v.rooms[appUser{appid, room}] }
func (v *batchView) Group(appid, gid int64) *store.Group      { return v.groups[appUser{appid, gid}] }
func (v *batchView) LiveServers() []string                    { return v.live }

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
	v := &batchView{users: map[appUser]store.UserPresence{}, rooms: map[appUser][]string{}, groups: map[appUser]*store.Group{},
		members: map[appUser][]store.UserPresence{}}
	var resolve []appUser                  // groups whose members to look up, each once
	want := map[int64]map[int64]struct{}{} // appid → uids
	addUser := func(appid, uid int64) {
		s := want[appid]
		if s == nil {
			s = map[int64]struct{}{}
			want[appid] = s
		}
		s[uid] = struct{}{}
	}
	needLive := false
	for _, ev := range evs {
		switch ev.Type {
		case schemas.TypePublish:
			addUser(ev.AppID, ev.Receiver)
		case schemas.TypePush:
			for _, uid := range ev.Receivers {
				addUser(ev.AppID, uid)
			}
		case schemas.TypePublishGroup:
			cmd := ev.Msg.Cmd
			if cmd != schemas.CmdGroupIM && cmd != schemas.CmdSyncGroupNotify {
				break
			}
			needLive = needLive || (cmd == schemas.CmdSyncGroupNotify && o.SyncGroupNotifyAll)
			k := appUser{ev.AppID, ev.Receiver}
			g, ok := v.groups[k]
			if !ok {
				var err error
				if g, err = gs.Group(ctx, ev.AppID, ev.Receiver); err != nil {
					return nil, err
				}
				v.groups[k] = g
			}
			if g != nil && !(cmd == schemas.CmdSyncGroupNotify && o.SyncGroupNotifyAll) {
				if _, ok := v.members[k]; !ok {
					v.members[k] = nil
					resolve = append(resolve, k)
				}
			}
		case schemas.TypePublishRoom:
			k := appUser{ev.AppID, ev.Receiver}
			if _, ok := v.rooms[k]; !ok {
				servers, err := ps.Room(ctx, ev.AppID, ev.Receiver, now)
				if err != nil {
					return nil, err
				}
				v.rooms[k] = servers
			}
		}
	}
	// One look-up per app: its receivers, then its groups' members.
	for _, k := range resolve {
		if want[k.appid] == nil {
			want[k.appid] = map[int64]struct{}{}
		}
	}
	for appid, set := range want {
		uids := make([]int64, 0, len(set))
		for uid := range set {
			uids = append(uids, uid)
		}
		peers := len(uids)
		for _, k := range resolve {
			if k.appid == appid {
				uids = append(uids, v.groups[k].Members...)
			}
		}
		res, err := ps.Users(ctx, appid, uids, now)
		if err != nil {
			return nil, err
		}
		for i, uid := range uids[:peers] {
			v.users[appUser{appid, uid}] = res[i]
		}
		at := peers
		for _, k := range resolve {
			if k.appid == appid {
				n := len(v.groups[k].Members)
				v.members[k] = res[at : at+n : at+n]
				at += n
			}
		}
	}
	if needLive {
		live, err := ps.LiveServers(ctx, now)
		if err != nil {
			return nil, err
		}
		v.live = live
	}
	return v, nil
}
