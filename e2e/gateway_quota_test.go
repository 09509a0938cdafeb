package e2e_test

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/imstream/imstream/gateway/imr"
	"github.com/imstream/imstream/internal/tools/testkit"
	"github.com/imstream/imstream/schemas"
)

// TestGatewayQuota: with gateway.quotas on, IM server b sends a flood of
// app 8's RT messages (quota 2/s) and then app 7's, on one connection, to
// a user of both apps on IM server a. App 7's are all delivered while app
// 8 is still held in the gateway; a SIGHUP that raises app 8's quota
// releases the rest, and every one of app 8's messages is delivered once,
// in order.
func TestGatewayQuota(t *testing.T) {
	const noisy, flood, quiet = 8, 300, 20
	dir := t.TempDir()
	conf := filepath.Join(dir, "imstream.yaml")
	quota := func(q int) {
		must(t, os.WriteFile(conf, []byte(fmt.Sprintf("gateway:\n  quotas:\n    enabled: true\nfanout:\n  fair_share:\n    quotas: {\"%d\": %d}\n", noisy, q)), 0o644))
	}
	quota(2)
	s := startStack(t, 1, 1)
	gw, p := s.startGateway("127.0.0.1:0", "--gateway.heartbeat_interval", "500ms", "--config", conf)
	admin := []string{adminOf(p)}

	c, b := twoServers(t, gw)
	// Presence applies one server's events in order: app 7's user online
	// means app 8's is too.
	must(t, c.Send(imr.CmdSubscribe, sub(noisy, 1, 1)))
	must(t, c.Send(imr.CmdSubscribe, sub(app, 1, 1)))
	must(t, c.Flush())
	testkit.Eventually(t, 30*time.Second, "user 1 online", func() bool {
		on, _ := s.online(t, 1)
		return on
	})

	rt := func(appid, i int64) []byte {
		return route(appid, 1, i, inner(schemas.Message{Cmd: schemas.CmdRT, Sender: 2, Receiver: 1, Content: fmt.Sprint(appid, "-", i)}))
	}
	for i := int64(1); i <= flood; i++ {
		must(t, b.Send(imr.CmdPublish, rt(noisy, i)))
	}
	for i := int64(1); i <= quiet; i++ {
		must(t, b.Send(imr.CmdPublish, rt(app, i)))
	}
	must(t, b.Flush())

	got := map[int64][]int64{} // msgids by app, as delivered
	receive := func(what string, done func() bool) {
		t.Helper()
		deadline := time.After(60 * time.Second)
		for !done() {
			select {
			case f := <-c.Frames():
				r, err := imr.ParseRoute(f.Body)
				must(t, err)
				got[r.AppID] = append(got[r.AppID], r.MsgID)
			case <-deadline:
				t.Fatalf("timed out waiting for %s: app 7 %d, app 8 %d delivered", what, len(got[app]), len(got[noisy]))
			}
		}
	}
	receive("app 7's messages", func() bool { return len(got[app]) == quiet })
	// At 2/s (a burst of 2) app 8's 300 take minutes: most are held now.
	held := metric(t, admin, "imstream_gateway_quota_holding")
	if held == 0 || len(got[noisy]) == flood {
		t.Fatalf("app 7 delivered with %v of app 8's events held and %d of %d delivered: app 8 was not held", held, len(got[noisy]), flood)
	}
	if n := metric(t, admin, fmt.Sprintf(`imstream_gateway_quota_held_total{app="%d",lane="online"}`, noisy)); n == 0 {
		t.Errorf("imstream_gateway_quota_held_total of app %d is 0", noisy)
	}

	quota(100_000)
	p.Signal(syscall.SIGHUP)
	receive("app 8's messages after the reload", func() bool { return len(got[noisy]) >= flood })
	for i, id := range got[noisy] {
		if id != int64(i+1) {
			t.Fatalf("app 8's messages out of order or repeated at %d: %v", i, got[noisy])
		}
	}
	for i, id := range got[app] {
		if id != int64(i+1) {
			t.Fatalf("app 7's messages: %v", got[app])
		}
	}
	if extra := drain(c, 500*time.Millisecond); len(extra) > 0 {
		t.Errorf("%d more frames after every message was delivered", len(extra))
	}
	if h := metric(t, admin, "imstream_gateway_quota_holding"); h != 0 {
		t.Errorf("%v events still held", h)
	}
}
