package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/imstream/imstream/gateway/imr"
	"github.com/imstream/imstream/ingest"
	"github.com/imstream/imstream/internal/tools/testkit"
	"github.com/imstream/imstream/schemas"
)

// broadcasts returns the broadcast deliveries on server's deliver topic,
// by notification.
func broadcasts(t *testing.T, s *stack, server string) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, m := range testkit.ReadAll(t, s.cfg, s.cfg.Kafka.Topics.DeliverPrefix+server) {
		var d schemas.Publish
		must(t, json.Unmarshal(m.Value, &d))
		if d.Type == schemas.TypePublishBroadcast {
			out[d.Msg.Notification]++
		}
	}
	return out
}

// TestBroadcast: IM servers s1 and s2 host app 7's users, s3 app 8's, s4
// app 7's until its lease lapses. A broadcast for app 7 is one delivery
// record on s1 and one on s2 — never one per user — none on s3; after s4's
// lease lapsed it gets none either; exclude_origin leaves out the sender.
func TestBroadcast(t *testing.T) {
	s := startStack(t, 1, 1)
	ctx := context.Background()
	s1, s2, s3, s4 := imServer(t, s.cfg, "s1", 1), imServer(t, s.cfg, "s2", 1), imServer(t, s.cfg, "s3", 1), imServer(t, s.cfg, "s4", 1)
	for uid := int64(1); uid <= 3; uid++ {
		must(t, s1.Subscribe(ctx, app, uid, true))
		must(t, s2.Subscribe(ctx, app, 10+uid, uid != 3))
	}
	must(t, s3.Subscribe(ctx, 8, 21, true))
	must(t, s4.Subscribe(ctx, app, 31, true))
	testkit.Eventually(t, 60*time.Second, "presence", func() bool {
		on1, _ := s.online(t, 1)
		on31, _ := s.online(t, 31)
		_, srv13 := s.online(t, 13)
		return on1 && on31 && len(srv13) == 1
	})
	notice := func(n string) schemas.Message { return schemas.Message{Cmd: schemas.CmdSystem, Notification: n} }
	must(t, s3.Broadcast(ctx, app, notice("maintenance")))
	testkit.Eventually(t, 60*time.Second, "the broadcast delivered", func() bool {
		return broadcasts(t, s, "s1")["maintenance"] == 1 && broadcasts(t, s, "s2")["maintenance"] == 1 && broadcasts(t, s, "s4")["maintenance"] == 1
	})

	// s4 stops without server_down: once its lease lapsed it is sent nothing.
	s.crash(t, s4, "s4", 31)
	must(t, s1.BroadcastWith(ctx, app, notice("banner"), ingest.BroadcastOptions{ExcludeOrigin: true, AllConnected: true}))
	must(t, s1.Broadcast(ctx, app, notice("last")))
	testkit.Eventually(t, 60*time.Second, "the last broadcast delivered", func() bool {
		return broadcasts(t, s, "s1")["last"] == 1 && broadcasts(t, s, "s2")["last"] == 1
	})
	testkit.WaitCaughtUp(t, s.cfg, s.cfg.Fanout.Group, s.cfg.Kafka.Topics.Publish, 60*time.Second)
	for srv, want := range map[string]map[string]int{
		"s1": {"maintenance": 1, "last": 1},
		"s2": {"maintenance": 1, "banner": 1, "last": 1},
		"s3": {},
		"s4": {"maintenance": 1},
	} {
		if got := broadcasts(t, s, srv); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: broadcasts %v, want %v", srv, got, want)
		}
	}
	// The deliveries say what they are, and whom they are for.
	for _, m := range testkit.ReadAll(t, s.cfg, s.cfg.Kafka.Topics.DeliverPrefix+"s2") {
		var d schemas.Publish
		must(t, json.Unmarshal(m.Value, &d))
		if d.Type == schemas.TypePublishBroadcast && d.Msg.Notification == "banner" && (d.OnlineUsersOnly() || !d.ExcludeOrigin || d.Src == nil) {
			t.Errorf("banner delivery %s: want online_only false, exclude_origin and src", m.Value)
		}
	}
}

// TestGatewayBroadcast: through the gateway, a broadcast becomes one
// publish frame per subscribed user of the app on each connection — online
// users only by default, every subscribed user with online_only false —
// and nothing for another app's users.
func TestGatewayBroadcast(t *testing.T) {
	s, gw, run := gatewayStack(t)
	p := run()
	a, b := twoServers(t, gw)
	must(t, a.Send(imr.CmdSubscribe, sub(app, 1, 1)))
	must(t, a.Send(imr.CmdSubscribe, sub(app, 2, 0)))
	must(t, b.Send(imr.CmdSubscribe, sub(app, 3, 1)))
	must(t, b.Send(imr.CmdSubscribe, sub(8, 4, 1)))
	must(t, a.Flush())
	must(t, b.Flush())
	testkit.Eventually(t, 30*time.Second, "presence via the gateway", func() bool {
		on1, _ := s.online(t, 1)
		on3, _ := s.online(t, 3)
		_, s2 := s.online(t, 2)
		return on1 && on3 && len(s2) == 1
	})
	backend := imServer(t, s.cfg, "backend", 1)
	ctx := context.Background()
	note := schemas.Message{Cmd: schemas.CmdSystem, Notification: "online only"}
	must(t, backend.Broadcast(ctx, app, note))
	all := schemas.Message{Cmd: schemas.CmdSystem, Notification: "everyone connected"}
	must(t, backend.BroadcastWith(ctx, app, all, ingest.BroadcastOptions{AllConnected: true}))

	frame := func(uid int64, m schemas.Message) string {
		body := imr.AppendRoute(nil, imr.Route{AppID: app, Receiver: uid, Inner: imr.AppendInner(nil, m)})
		return fmt.Sprintf("%x", imr.AppendFrame(nil, imr.Frame{Cmd: imr.CmdPublish, Body: body}))
	}
	wantA := []string{frame(1, note), frame(1, all), frame(2, all)}
	wantB := []string{frame(3, note), frame(3, all)}
	var gotA, gotB []imr.Frame
	testkit.Eventually(t, 60*time.Second, "the broadcasts' frames", func() bool {
		gotA = append(gotA, drain(a, 200*time.Millisecond)...)
		gotB = append(gotB, drain(b, 200*time.Millisecond)...)
		return len(gotA) >= len(wantA) && len(gotB) >= len(wantB)
	})
	gotA = append(gotA, drain(a, time.Second)...)
	gotB = append(gotB, drain(b, time.Second)...)
	sort.Strings(wantA)
	sort.Strings(wantB)
	if fmt.Sprint(frameSet(gotA)) != fmt.Sprint(wantA) {
		t.Errorf("connection a: frames\n%v\nwant\n%v", frameSet(gotA), wantA)
	}
	if fmt.Sprint(frameSet(gotB)) != fmt.Sprint(wantB) {
		t.Errorf("connection b: frames\n%v\nwant\n%v", frameSet(gotB), wantB)
	}
	if v := metric(t, []string{adminOf(p)}, `imstream_gateway_broadcasts_total{result="written"}`); v != 4 {
		t.Errorf("broadcasts expanded: %v, want 4 (two on each connection)", v)
	}
}
