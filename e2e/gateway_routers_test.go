package e2e_test

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/imstream/imstream/gateway/imr"
	"github.com/imstream/imstream/internal/tools/loadgen"
	"github.com/imstream/imstream/internal/tools/testkit"
	"github.com/imstream/imstream/schemas"
)

// imServer2 is an im_service IM server with two routers in route_addrs:
// one connection to each gateway (index 0 and 1); it subscribes users on
// both, as im_service does at login, a room only on room % 2's, and sends
// a message for uid (room, group) on id % 2's connection only.
type imServer2 struct {
	t    *testing.T
	conn [2]*loadgen.Client
}

func dial2(t *testing.T, gws [2]string, local string) *imServer2 {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s := &imServer2{t: t}
	for i, gw := range gws {
		c, err := loadgen.Dial(ctx, gw, local)
		must(t, err)
		t.Cleanup(func() { _ = c.Close() })
		s.conn[i] = c
	}
	return s
}

func (s *imServer2) subscribe(uid int64) {
	for _, c := range s.conn {
		must(s.t, c.Send(imr.CmdSubscribe, sub(app, uid, 1)))
		must(s.t, c.Flush())
	}
}

func (s *imServer2) send(cmd uint8, id int64, body []byte) {
	c := s.conn[id%2]
	must(s.t, c.Send(cmd, body))
	must(s.t, c.Flush())
}

// frames are the contents of the route frames connection i received
// until quiet for d, sorted.
func (s *imServer2) frames(i int, d time.Duration) []string {
	var out []string
	for _, f := range drain(s.conn[i], d) {
		rt, err := imr.ParseRoute(f.Body)
		must(s.t, err)
		m, err := imr.ParseInner(rt.Inner)
		must(s.t, err)
		out = append(out, fmt.Sprintf("%d:%s", f.Cmd, m.Content))
	}
	sort.Strings(out)
	return out
}

// TestGatewayTwoRouters: two gateways in the IM servers' route_addrs
// (gateway.routers 2, router_index 0 and 1), every IM server connected to
// both, as im_service runs two imr. Each IM server is a server per gateway
// (imr-g0-…, imr-g1-…), a subscription through either gateway counts, and
// each message reaches each IM server once, on the connection of its
// router; a gateway stopped (SIGTERM) and started again changes nothing for
// the other, and its IM servers' users stay online meanwhile.
func TestGatewayTwoRouters(t *testing.T) {
	s := startStack(t, 1, 1, "--presence.lease", "60s")
	var gws [2]string
	flags := func(i int) []string {
		return []string{"--gateway.heartbeat_interval", "500ms", "--gateway.routers", "2", "--gateway.router_index", fmt.Sprint(i)}
	}
	gws[0], _ = s.startGateway("127.0.0.1:0", flags(0)...)
	var gw1 *testkit.Process
	gws[1], gw1 = s.startGateway("127.0.0.1:0", flags(1)...)
	a, b := dial2(t, gws, "127.0.0.2"), dial2(t, gws, "127.0.0.3")
	a.subscribe(1)
	a.subscribe(2)
	b.subscribe(3)
	b.subscribe(4)
	b.send(imr.CmdSubscribeRoom, 9, imr.AppendID(nil, imr.ID{AppID: app, ID: 9})) // room 9: router 1 only
	testkit.Eventually(t, 30*time.Second, "presence through both gateways", func() bool {
		_, s3 := s.online(t, 3)
		_, s2 := s.online(t, 2)
		return fmt.Sprint(s3) == "[imr-g0-127.0.0.3 imr-g1-127.0.0.3]" && fmt.Sprint(s2) == "[imr-g0-127.0.0.2 imr-g1-127.0.0.2]"
	})

	rt := func(to int64, content string) []byte {
		return route(app, to, 0, inner(schemas.Message{Cmd: schemas.CmdRT, Sender: 1, Receiver: to, Content: content}))
	}
	send := func(round string) {
		a.send(imr.CmdPublish, 3, rt(3, round+"rt-3"))
		a.send(imr.CmdPublish, 4, rt(4, round+"rt-4"))
		b.send(imr.CmdPublish, 1, rt(1, round+"rt-1"))
		a.send(imr.CmdPublishRoom, 9, route(app, 9, 0, inner(schemas.Message{Cmd: schemas.CmdRoomIM, Sender: 1, Receiver: 9, Content: round + "room-9"})))
		a.send(imr.CmdPublishGroup, 10, route(app, 10, 0, inner(schemas.Message{Cmd: schemas.CmdGroupIM, Version: 2, Sender: 1, Receiver: 10, Content: round + "group-10"})))
		a.send(imr.CmdPublishGroup, 11, route(app, 11, 0, inner(schemas.Message{Cmd: schemas.CmdGroupIM, Version: 2, Sender: 1, Receiver: 11, Content: round + "group-11"})))
	}
	check := func(round string) {
		t.Helper()
		want := map[string][2][]string{ // server: frames on its router-0 and router-1 connections
			"b": {{"132:" + round + "rt-4", "135:" + round + "group-10"}, {"132:" + round + "rt-3", "135:" + round + "group-11", "138:" + round + "room-9"}},
			"a": {nil, {"132:" + round + "rt-1"}},
		}
		for name, srv := range map[string]*imServer2{"a": a, "b": b} {
			for i := range 2 {
				d := 500 * time.Millisecond
				if name == "b" && i == 0 {
					d = 5 * time.Second // the first drain waits for the routing
				}
				if got := srv.frames(i, d); fmt.Sprint(got) != fmt.Sprint(want[name][i]) {
					t.Errorf("%s: IM server %s, router %d's connection got %q, want %q", round, name, i, got, want[name][i])
				}
			}
		}
	}
	// The fanout judges servers live by presence's progress: wait until a
	// group message on each router reaches B (a server that came up after
	// the snapshot a decision read is not yet live for it).
	warm(t, a, b)
	send("1-")
	check("1-")

	// Gateway 1 stops: its connections end with server_down for its
	// servers only; the users stay online through gateway 0.
	roomBefore := roomEpoch(s, 9, "imr-g1-127.0.0.3")
	gw1.Stop()
	testkit.Eventually(t, 30*time.Second, "gateway 1's servers down", func() bool {
		_, s3 := s.online(t, 3)
		return fmt.Sprint(s3) == "[imr-g0-127.0.0.3]"
	})
	if on, _ := s.online(t, 3); !on {
		t.Errorf("user 3 offline while gateway 0 still holds B's connection")
	}
	// Gateway 1 again, on the same address: the IM servers reconnect and
	// replay their subscriptions; both routers route as before.
	s.startGateway(gws[1], flags(1)...)
	testkit.Eventually(t, 30*time.Second, "the IM servers back on gateway 1", func() bool {
		_, s3 := s.online(t, 3)
		_, s1 := s.online(t, 1)
		return fmt.Sprint(s3) == "[imr-g0-127.0.0.3 imr-g1-127.0.0.3]" && fmt.Sprint(s1) == "[imr-g0-127.0.0.2 imr-g1-127.0.0.2]"
	})
	// the room subscription, replayed by B's router-1 connection
	testkit.Eventually(t, 30*time.Second, "room 9 on gateway 1's new epoch", func() bool {
		return roomEpoch(s, 9, "imr-g1-127.0.0.3") != roomBefore
	})
	warm(t, a, b)
	send("2-")
	check("2-")
}

// warm sends group messages on both routers until B has one on each
// connection, then drains what arrived.
func warm(t *testing.T, a, b *imServer2) {
	t.Helper()
	var got [2]bool
	testkit.Eventually(t, 30*time.Second, "a group message through each router", func() bool {
		for i := range 2 {
			if !got[i] {
				gid := int64(20 + i)
				a.send(imr.CmdPublishGroup, gid, route(app, gid, 0, inner(schemas.Message{Cmd: schemas.CmdGroupIM, Version: 2, Sender: 1, Receiver: gid, Content: "warm"})))
				got[i] = len(drain(b.conn[i], 300*time.Millisecond)) > 0
			}
		}
		return got[0] && got[1]
	})
	for _, srv := range []*imServer2{a, b} {
		for i := range 2 {
			drain(srv.conn[i], time.Second)
		}
	}
}

// roomEpoch is the epoch under which server subscribed room (presence's
// Redis layout, docs/redis.md).
func roomEpoch(s *stack, room int64, server string) string {
	rc := testkit.RedisClient(s.t, s.cfg.Redis.Addrs[0])
	v, _ := rc.HGet(context.Background(), fmt.Sprintf("%sr:{%d:%d}", s.cfg.Redis.KeyPrefix, app, room), server).Result()
	return v
}
