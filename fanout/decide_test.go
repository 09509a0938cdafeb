package fanout_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/imstream/imstream/fanout"
	"github.com/imstream/imstream/schemas"
	"github.com/imstream/imstream/store"
)

// view: users 1 online on s1; 2 present on s2 but online=false; 3 online on
// s1 and s3; 4 absent. Group 55 = {1,2,3,4}; room 9 on s1, s2.
type view struct{}

func (view) User(appid, uid int64) store.UserPresence {
	if appid != 7 {
		return store.UserPresence{}
	}
	switch uid {
	case 1:
		return store.UserPresence{Online: true, Servers: []string{"s1"}}
	case 2:
		return store.UserPresence{Online: false, Servers: []string{"s2"}}
	case 3:
		return store.UserPresence{Online: true, Servers: []string{"s1", "s3"}}
	}
	return store.UserPresence{}
}
func (view) AppServers(appid int64) []string {
	if appid == 7 {
		return []string{"s1", "s2", "s3"}
	}
	return nil
}
func (view) Room(appid, room int64) []string {
	if appid == 7 && room == 9 {
		return []string{"s1", "s2"}
	}
	return nil
}
func (view) Group(appid, gid int64) *store.Group {
	if appid == 7 && gid == 55 {
		return &store.Group{AppID: 7, ID: 55, Members: []int64{1, 2, 3, 4}}
	}
	return nil
}
func (view) LiveServers() []string { return []string{"s1", "s2", "s3", "s4"} }

func pub(typ schemas.Type, origin string, receiver int64, msg schemas.Message) *schemas.Publish {
	return &schemas.Publish{Header: schemas.Header{V: 1, Type: typ, Server: origin, AppID: 7}, Receiver: receiver, Msg: msg}
}

func TestDecide(t *testing.T) {
	im := func(flag int) schemas.Message { return schemas.Message{Cmd: 4, Flag: flag, Sender: 3, Receiver: 1} }
	gim := schemas.Message{Cmd: 8, Sender: 3, Receiver: 55}
	sync := schemas.Message{Cmd: 33, GroupID: 55}
	type tc struct {
		name string
		ev   *schemas.Publish
		opts fanout.Options
		want string
	}
	tests := []tc{
		{"online peer, persistent: nothing", pub(schemas.TypePublish, "s3", 1, im(0)), fanout.Options{}, "deliver=[] push=[] skip="},
		{"offline peer, persistent: push only", pub(schemas.TypePublish, "s3", 4, im(0)), fanout.Options{}, "deliver=[] push=[[4]] skip="},
		{"present but online=false, persistent: push, no forward", pub(schemas.TypePublish, "s1", 2, im(0)), fanout.Options{}, "deliver=[] push=[[2]] skip="},
		{"online peer, unpersistent: forward except origin", pub(schemas.TypePublish, "s1", 3, im(schemas.FlagUnpersistent)), fanout.Options{}, "deliver=[s3] push=[] skip="},
		{"present offline, unpersistent: push and forward", pub(schemas.TypePublish, "s1", 2, im(schemas.FlagUnpersistent)), fanout.Options{}, "deliver=[s2] push=[[2]] skip="},
		{"RT online: forward", pub(schemas.TypePublish, "s2", 1, schemas.Message{Cmd: 17, Sender: 2, Receiver: 1}), fanout.Options{}, "deliver=[s1] push=[] skip="},
		{"RT offline: nothing (not pushable)", pub(schemas.TypePublish, "s2", 4, schemas.Message{Cmd: 17, Sender: 2, Receiver: 4}), fanout.Options{}, "deliver=[] push=[] skip="},
		{"system offline: push", pub(schemas.TypePublish, "s2", 4, schemas.Message{Cmd: 21, Notification: "n"}), fanout.Options{}, "deliver=[] push=[[4]] skip="},
		{"customer offline: push", pub(schemas.TypePublish, "s2", 4, schemas.Message{Cmd: 24, CustomerAppID: 1, CustomerID: 2}), fanout.Options{}, "deliver=[] push=[[4]] skip="},
		{"customer v2 offline: push", pub(schemas.TypePublish, "s2", 4, schemas.Message{Cmd: 64, SenderAppID: 1, Sender: 1, ReceiverAppID: 7, Receiver: 4}), fanout.Options{}, "deliver=[] push=[[4]] skip="},
		{"group notification unpersistent cmd: forward", pub(schemas.TypePublish, "s1", 3, schemas.Message{Cmd: 7, Notification: "x"}), fanout.Options{}, "deliver=[s3] push=[] skip="},
		{"group IM: offline members minus sender", pub(schemas.TypePublishGroup, "s1", 55, gim), fanout.Options{}, "deliver=[] push=[[2 4]] skip="},
		{"group IM from an offline sender", pub(schemas.TypePublishGroup, "s1", 55, schemas.Message{Cmd: 8, Sender: 4, Receiver: 55}), fanout.Options{}, "deliver=[] push=[[2]] skip="},
		{"sync group notify: servers with members, not origin", pub(schemas.TypePublishGroup, "s1", 55, sync), fanout.Options{}, "deliver=[s2 s3] push=[] skip="},
		{"sync group notify, all servers option", pub(schemas.TypePublishGroup, "s1", 55, sync), fanout.Options{SyncGroupNotifyAll: true}, "deliver=[s2 s3 s4] push=[] skip="},
		{"other group cmd: nothing", pub(schemas.TypePublishGroup, "s1", 55, schemas.Message{Cmd: 7}), fanout.Options{}, "deliver=[] push=[] skip="},
		{"unknown group: nothing, counted", pub(schemas.TypePublishGroup, "s1", 56, gim), fanout.Options{}, "deliver=[] push=[] skip=unknown_group"},
		{"room: servers except origin", pub(schemas.TypePublishRoom, "s1", 9, schemas.Message{Cmd: 20, Sender: 1, Receiver: 9}), fanout.Options{}, "deliver=[s2] push=[] skip="},
		{"empty room", pub(schemas.TypePublishRoom, "s1", 8, schemas.Message{Cmd: 20, Sender: 1, Receiver: 8}), fanout.Options{}, "deliver=[] push=[] skip="},
		{"other app's users are not these", &schemas.Publish{Header: schemas.Header{Type: schemas.TypePublish, Server: "s3", AppID: 8}, Receiver: 1, Msg: im(0)}, fanout.Options{}, "deliver=[] push=[[1]] skip="},
	}
	push := func(receivers []int64, msg schemas.Message) *schemas.Publish {
		return &schemas.Publish{Header: schemas.Header{Type: schemas.TypePush, Server: "s1", AppID: 7}, Receivers: receivers, Msg: msg}
	}
	tests = append(tests,
		tc{"MSG_PUSH IM: one job of the offline receivers (an entry each)", push([]int64{1, 2, 3, 4}, im(0)), fanout.Options{}, "deliver=[] push=[[2 4]] skip="},
		tc{"MSG_PUSH GROUP_IM: one group job", push([]int64{1, 2, 4}, gim), fanout.Options{}, "deliver=[] push=[[2 4]] skip="},
		tc{"MSG_PUSH all online: nothing", push([]int64{1, 3}, im(0)), fanout.Options{}, "deliver=[] push=[] skip="},
	)
	bc := func(origin string, appid int64, excl bool) *schemas.Publish {
		return &schemas.Publish{Header: schemas.Header{Type: schemas.TypePublishBroadcast, Server: origin, AppID: appid}, ExcludeOrigin: excl,
			Msg: schemas.Message{Cmd: schemas.CmdSystem, Notification: "n"}}
	}
	tests = append(tests,
		tc{"broadcast: every server hosting the app, the origin too", bc("s1", 7, false), fanout.Options{}, "deliver=[s1 s2 s3] push=[] skip="},
		tc{"broadcast excluding its origin", bc("s1", 7, true), fanout.Options{}, "deliver=[s2 s3] push=[] skip="},
		tc{"broadcast to an app on no server: nothing", bc("s1", 8, false), fanout.Options{}, "deliver=[] push=[] skip="},
	)
	big := fanout.Options{GroupChunk: 3}
	tests = append(tests,
		tc{"big group IM: the group's members, left to the pusher", pub(schemas.TypePublishGroup, "s1", 55, gim), big, "deliver=[] push=[] big_group=55 skip="},
		tc{"group of GroupChunk members is not big", pub(schemas.TypePublishGroup, "s1", 55, gim), fanout.Options{GroupChunk: 4}, "deliver=[] push=[[2 4]] skip="},
		tc{"big group sync notify: still servers with members", pub(schemas.TypePublishGroup, "s1", 55, sync), big, "deliver=[s2 s3] push=[] skip="},
	)
	// route "imr": im_service's router at HEAD — forwarded, never pushed;
	// pushes only from MSG_PUSH, with imr's command set and entries.
	imr := func(ev *schemas.Publish) *schemas.Publish { ev.Route = schemas.RouteIMR; return ev }
	notification := schemas.Message{Cmd: 36, Raw: []byte{0, 0, 0, 0, 0, 0, 36, 1, 0, 0, 0, 0}}
	tests = append(tests,
		tc{"imr: persistent peer IM to an online user: forwarded", imr(pub(schemas.TypePublish, "s3", 1, im(0))), fanout.Options{}, "deliver=[s1] push=[] skip="},
		tc{"imr: persistent peer IM to an offline user: nothing (the IM server sends MSG_PUSH)", imr(pub(schemas.TypePublish, "s3", 4, im(0))), fanout.Options{}, "deliver=[] push=[] skip="},
		tc{"imr: present with online=false: forwarded, not pushed", imr(pub(schemas.TypePublish, "s1", 2, im(0))), fanout.Options{}, "deliver=[s2] push=[] skip="},
		tc{"imr: to the sender's other devices, not back to the origin", imr(pub(schemas.TypePublish, "s1", 3, im(0))), fanout.Options{}, "deliver=[s3] push=[] skip="},
		tc{"imr: any inner command (MSG_NOTIFICATION 36)", imr(pub(schemas.TypePublish, "s2", 3, notification)), fanout.Options{}, "deliver=[s1 s3] push=[] skip="},
		tc{"imr: group IM: every live server but the origin, no push", imr(pub(schemas.TypePublishGroup, "s1", 55, gim)), fanout.Options{}, "deliver=[s2 s3 s4] push=[] skip="},
		tc{"imr: a group no store knows: the same", imr(pub(schemas.TypePublishGroup, "s2", 56, gim)), fanout.Options{}, "deliver=[s1 s3 s4] push=[] skip="},
		tc{"imr: room", imr(pub(schemas.TypePublishRoom, "s1", 9, schemas.Message{Cmd: 20, Sender: 1, Receiver: 9})), fanout.Options{}, "deliver=[s2] push=[] skip="},
		tc{"imr: MSG_PUSH IM: one entry for the message's receiver", imr(push([]int64{4}, schemas.Message{Cmd: 4, Sender: 3, Receiver: 4})), fanout.Options{}, "deliver=[] push=[[4]] skip="},
		tc{"imr: MSG_PUSH IM, receiver online: nothing", imr(push([]int64{1}, im(0))), fanout.Options{}, "deliver=[] push=[] skip="},
		tc{"imr: MSG_PUSH GROUP_IM: the offline receivers", imr(push([]int64{1, 2, 4}, gim)), fanout.Options{}, "deliver=[] push=[[2 4]] skip="},
		tc{"imr: MSG_PUSH SYSTEM: the first offline receiver", imr(push([]int64{1, 2, 4}, schemas.Message{Cmd: 21, Notification: "n"})), fanout.Options{}, "deliver=[] push=[[2]] skip="},
		tc{"imr: MSG_PUSH CUSTOMER_V2", imr(push([]int64{4}, schemas.Message{Cmd: 64, SenderAppID: 1, Sender: 1, ReceiverAppID: 7, Receiver: 4})), fanout.Options{}, "deliver=[] push=[[4]] skip="},
		tc{"imr: MSG_PUSH CUSTOMER (24): imr pushes nothing", imr(push([]int64{4}, schemas.Message{Cmd: 24, CustomerAppID: 1, CustomerID: 2})), fanout.Options{}, "deliver=[] push=[] skip=not_pushable"},
	)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := fanout.Decide(tt.ev, view{}, tt.opts)
			got := fmt.Sprintf("deliver=%v push=%v skip=%s", p.Deliver, p.Push, p.Skip)
			if p.BigGroup != nil {
				got = fmt.Sprintf("deliver=%v push=%v big_group=%d skip=%s", p.Deliver, p.Push, p.BigGroup.ID, p.Skip)
			}
			if got != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}

func BenchmarkDecideGroup(b *testing.B) {
	ev := pub(schemas.TypePublishGroup, "s1", 55, schemas.Message{Cmd: 8, Sender: 3, Receiver: 55})
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		fanout.Decide(ev, view{}, fanout.Options{})
	}
}

func BenchmarkDecidePeer(b *testing.B) {
	ev := pub(schemas.TypePublish, "s3", 2, schemas.Message{Cmd: 4, Flag: schemas.FlagUnpersistent, Sender: 1, Receiver: 2})
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		fanout.Decide(ev, view{}, fanout.Options{})
	}
}

// TestDescribe: the decision header names the rule and what it read, the
// origin included in present (docs/protocol.md §6).
func TestDescribe(t *testing.T) {
	im := func(to int64, flag int) schemas.Message {
		return schemas.Message{Cmd: 4, Flag: flag, Sender: 3, Receiver: to}
	}
	big := fanout.Options{GroupChunk: 2}
	for _, tc := range []struct {
		ev   *schemas.Publish
		o    fanout.Options
		want string
	}{
		{pub(schemas.TypePublish, "s3", 3, im(3, schemas.FlagUnpersistent)), fanout.Options{}, "peer present=s1,s3 online=true"},
		{pub(schemas.TypePublish, "s1", 2, im(2, 0)), fanout.Options{}, "peer present=s2 online=false"},
		{pub(schemas.TypePublish, "s1", 4, im(4, 0)), fanout.Options{}, "peer present= online=false"},
		{pub(schemas.TypePublishGroup, "s1", 55, schemas.Message{Cmd: 8, Sender: 3, Receiver: 55}), fanout.Options{}, "group members=4 offline=2"},
		{pub(schemas.TypePublishGroup, "s1", 55, schemas.Message{Cmd: 8, Sender: 3, Receiver: 55}), big, "group members=4 offline=pusher"},
		{pub(schemas.TypePublishGroup, "s1", 77, schemas.Message{Cmd: 8, Sender: 3, Receiver: 77}), fanout.Options{}, "group unknown"},
		{pub(schemas.TypePublishGroup, "s1", 55, schemas.Message{Cmd: 33, GroupID: 55}), fanout.Options{}, "group_notify present=s1,s2,s3"},
		{pub(schemas.TypePublishGroup, "s1", 55, schemas.Message{Cmd: 33, GroupID: 55}), fanout.Options{SyncGroupNotifyAll: true}, "group_notify live=s1,s2,s3,s4"},
		{pub(schemas.TypePublishRoom, "s1", 9, schemas.Message{Cmd: 18, Sender: 3, Receiver: 9}), fanout.Options{}, "room present=s1,s2"},
		{pub(schemas.TypePublishBroadcast, "s1", 0, schemas.Message{Cmd: 5}), fanout.Options{}, "broadcast present=s1,s2,s3"},
		{&schemas.Publish{Header: schemas.Header{V: 1, Type: schemas.TypePush, Server: "s1", AppID: 7}, Receivers: []int64{1, 4, 2}, Msg: im(1, 0)}, fanout.Options{}, "push receivers=3 offline=2"},
		{pub(schemas.TypePublishBroadcast, "s1", 0, schemas.Message{Cmd: 5}), fanout.Options{}, "broadcast present=a0,a1,a2,a3,a4,a5,a6,a7,+12"},
		{&schemas.Publish{Header: schemas.Header{V: 1, Type: schemas.TypePublishGroup, Server: "s1", AppID: 7}, Receiver: 77, Route: schemas.RouteIMR,
			Msg: schemas.Message{Cmd: 8, Sender: 3, Receiver: 77}}, fanout.Options{}, "group live=s1,s2,s3,s4 route=imr"},
		{&schemas.Publish{Header: schemas.Header{V: 1, Type: schemas.TypePublish, Server: "s3", AppID: 7}, Receiver: 2, Route: schemas.RouteIMR,
			Msg: im(2, 0)}, fanout.Options{}, "peer present=s2 online=false route=imr"},
	} {
		p := fanout.Decide(tc.ev, view{}, tc.o)
		if strings.HasSuffix(tc.want, "+12") { // a deployment of 20 servers
			p.Present = nil
			for i := range 20 {
				p.Present = append(p.Present, fmt.Sprintf("a%d", i))
			}
		}
		if got := string(fanout.AppendDescribe(nil, tc.ev, p, view{}, tc.o)); got != tc.want {
			t.Errorf("%s %+v: %q, want %q", tc.ev.Type, tc.ev.Msg, got, tc.want)
		}
	}
}

// BenchmarkDescribePeer is the decision header's cost on the commonest
// event (docs: BENCHMARKS.md "Trace and its headers").
func BenchmarkDescribePeer(b *testing.B) {
	ev := pub(schemas.TypePublish, "s3", 3, schemas.Message{Cmd: 4, Flag: schemas.FlagUnpersistent, Sender: 1, Receiver: 3})
	p := fanout.Decide(ev, view{}, fanout.Options{})
	b.ReportAllocs()
	var buf []byte
	for i := 0; i < b.N; i++ {
		buf = fanout.AppendDescribe(buf[:0], ev, p, view{}, fanout.Options{})
	}
}
