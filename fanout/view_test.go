package fanout

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/imstream/imstream/schemas"
	"github.com/imstream/imstream/store"
)

// load resolves every receiver and group member of a batch that mixes
// apps with the same user ids, each app's users against its own keys.
func TestLoadMixedApps(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	ps := store.NewMemoryPresence(time.Minute)
	hdr := func(typ schemas.Type, appid int64) schemas.Header {
		return schemas.Header{V: 1, Type: typ, Server: "s1", AppID: appid, TS: now.UnixMilli()}
	}
	online := true
	evs := []*schemas.Presence{{Header: hdr(schemas.TypeServerUp, 1), Epoch: 1}}
	// App 1: users 1, 2 online. App 2: user 2, 3 online. User 4 nowhere.
	for _, u := range []struct{ app, uid int64 }{{1, 1}, {1, 2}, {2, 2}, {2, 3}} {
		evs = append(evs, &schemas.Presence{Header: hdr(schemas.TypeSubscribe, u.app), Epoch: 1, UID: u.uid, Online: &online})
	}
	if err := ps.Apply(ctx, evs, now); err != nil {
		t.Fatal(err)
	}
	gs := store.NewMemoryGroups()
	if err := gs.Apply(ctx, []*schemas.Group{{Header: hdr(schemas.TypeGroupCreate, 2), GroupID: 9, Members: []int64{1, 2, 3, 4}}}); err != nil {
		t.Fatal(err)
	}
	msg := schemas.Message{Cmd: schemas.CmdIM, Sender: 9, Receiver: 1}
	batch := []*schemas.Publish{
		{Header: hdr(schemas.TypePublish, 1), Receiver: 1, Msg: msg},
		{Header: hdr(schemas.TypePublish, 1), Receiver: 3, Msg: msg},
		{Header: hdr(schemas.TypePublishGroup, 2), Receiver: 9, Msg: schemas.Message{Cmd: schemas.CmdGroupIM, Sender: 1, Receiver: 9}},
		{Header: hdr(schemas.TypePush, 1), Receivers: []int64{2, 4}, Msg: msg},
		{Header: schemas.Header{V: 1, Type: schemas.TypePublishGroup, Server: "s2", AppID: 2, TS: now.UnixMilli()}, Receiver: 9, Msg: schemas.Message{Cmd: schemas.CmdSyncGroupNotify, Sender: 1, Receiver: 9}},
	}
	v, err := load(ctx, batch, ps, gs, Options{}, now)
	if err != nil {
		t.Fatal(err)
	}
	if p := Decide(batch[2], v, Options{}); fmt.Sprint(p.Push) != "[[4]]" {
		t.Errorf("group message pushes %v, want [[4]] (1 sent it, 2 and 3 are online)", p.Push)
	}
	want := map[[2]int64]bool{{1, 1}: true, {1, 2}: true, {1, 3}: false, {1, 4}: false}
	for k, on := range want {
		if got := v.User(k[0], k[1]); got.Online != on {
			t.Errorf("app %d user %d: online %v, want %v (%+v)", k[0], k[1], got.Online, on, got)
		}
	}
	// Group 9 of app 2: members 1, 2, 3, 4 of app 2.
	var members []bool
	for _, u := range v.Members(2, 9) {
		members = append(members, u.Online)
	}
	if fmt.Sprint(members) != "[false true true false]" {
		t.Errorf("members of app 2 group 9 online %v, want [false true true false]", members)
	}
	if got := v.User(3, 1); got.Online || got.Servers != nil {
		t.Errorf("a user of an app not in the batch: %+v", got)
	}
	// Deciding from the batch view is deciding from the stores directly.
	direct := directView{ctx: ctx, ps: ps, gs: gs, now: now}
	for _, ev := range batch {
		if got, want := Decide(ev, v, Options{}), Decide(ev, direct, Options{}); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s to %d: batch view plans %+v, the stores %+v", ev.Type, ev.Receiver, got, want)
		}
	}
}

// directView asks the stores per call.
type directView struct {
	ctx context.Context
	ps  store.PresenceStore
	gs  store.GroupStore
	now time.Time
}

func (d directView) User(appid, uid int64) store.UserPresence {
	r, err := d.ps.Users(d.ctx, appid, []int64{uid}, d.now)
	if err != nil {
		panic(err)
	}
	return r[0]
}
func (d directView) AppServers(appid int64) []string {
	r, err := d.ps.AppServers(d.ctx, appid, d.now)
	if err != nil {
		panic(err)
	}
	return r
}
func (d directView) Room(appid, room int64) []string {
	r, err := d.ps.Room(d.ctx, appid, room, d.now)
	if err != nil {
		panic(err)
	}
	return r
}
func (d directView) Group(appid, gid int64) *store.Group {
	g, err := d.gs.Group(d.ctx, appid, gid)
	if err != nil {
		panic(err)
	}
	return g
}
func (d directView) LiveServers() []string { return nil }
