package gateway

import (
	"bufio"
	"bytes"
	"fmt"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/imstream/imstream/gateway/imr"
	"github.com/imstream/imstream/internal/plumbing/config"
	"github.com/imstream/imstream/internal/tools/testkit"
	"github.com/imstream/imstream/schemas"
)

// TestBroadcastGuard: a broadcast becomes a frame per subscribed user of
// its app (online ones unless online_only is false), sorted by uid; an
// unsubscribed user and another app's are left out; beyond
// gateway.max_broadcast_users nothing is written and the refusal counted.
func TestBroadcastGuard(t *testing.T) {
	g := newTestGateway(t, func(c *config.Config) { c.Gateway.MaxBroadcastUsers = 3 })
	c := &conn{g: g, id: "imr-10.0.0.1"}
	c.subscribed(7, 3, true, true)
	c.subscribed(7, 1, true, true)
	c.subscribed(7, 2, true, false)
	c.subscribed(7, 4, true, true)
	c.subscribed(7, 4, false, false)
	c.subscribed(8, 5, true, true)
	p := &schemas.Publish{Header: schemas.Header{Type: schemas.TypePublishBroadcast, AppID: 7}, Msg: schemas.Message{Cmd: schemas.CmdSystem, Notification: "n"}}
	uids := func(b []byte) []int64 {
		var out []int64
		r := bufio.NewReader(bytes.NewReader(b))
		for {
			f, err := imr.ReadFrame(r)
			if err != nil {
				return out
			}
			rt, err := imr.ParseRoute(f.Body)
			if err != nil || f.Cmd != imr.CmdPublish || rt.AppID != 7 {
				t.Fatalf("frame %+v: %v", f, err)
			}
			out = append(out, rt.Receiver)
		}
	}
	b, n, _ := c.appendBroadcast(nil, p)
	if got := uids(b); n != 2 || len(got) != 2 || got[0] != 1 || got[1] != 3 {
		t.Fatalf("online only: %d frames to %v, want 2 to [1 3]", n, got)
	}
	all := false
	p.OnlineOnly = &all
	if b, n, _ = c.appendBroadcast(nil, p); n != 3 || len(uids(b)) != 3 {
		t.Fatalf("all connected: %d frames, want 3", n)
	}
	// With two routers this gateway (router 1) writes only its own users'
	// frames (uid % 2 == 1); the other gateway writes the rest.
	c.g.cfg.Routers, c.g.cfg.RouterIndex = 2, 1
	if b, n, others := c.appendBroadcast(nil, p); n != 2 || others != 1 || fmt.Sprint(uids(b)) != "[1 3]" {
		t.Fatalf("router 1 of 2: %d frames to %v, %d left; want 2 to [1 3], 1 left", n, uids(b), others)
	}
	c.g.cfg.Routers, c.g.cfg.RouterIndex = 1, 0
	c.subscribed(7, 6, true, false)
	if b, n, _ = c.appendBroadcast(nil, p); n != 0 || len(b) != 0 {
		t.Fatalf("over the limit: %d frames written, want none", n)
	}
	if v := testutil.ToFloat64(g.m.broadcastsRefused); v != 1 {
		t.Fatalf("refused broadcasts %v, want 1", v)
	}
}

// BenchmarkBroadcastExpansion: one broadcast expanded into frames for the
// 50 000 subscribed users of one connection (1M users over 20 servers).
func BenchmarkBroadcastExpansion(b *testing.B) {
	cfg := config.Default()
	g, err := New(cfg.Gateway, cfg.Fanout.FairShare, testkit.StageEnv(cfg))
	if err != nil {
		b.Fatal(err)
	}
	c := &conn{g: g, id: "imr-10.0.0.1"}
	for uid := int64(1); uid <= 50_000; uid++ {
		c.subscribed(7, 1_000_000_000_000_000_000+uid, true, true)
	}
	p := &schemas.Publish{Header: schemas.Header{Type: schemas.TypePublishBroadcast, AppID: 7},
		Msg: schemas.Message{Cmd: schemas.CmdSystem, Notification: `{"maintenance":"02:00-02:10 UTC"}`}}
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		var n int
		buf, n, _ = c.appendBroadcast(buf[:0], p)
		if n != 50_000 {
			b.Fatal(n)
		}
	}
	b.ReportMetric(float64(b.N)*50_000/b.Elapsed().Seconds(), "frames/s")
}
