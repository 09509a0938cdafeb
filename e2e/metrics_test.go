package e2e_test

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/imstream/imstream/ingest"
	"github.com/imstream/imstream/internal/tools/testkit"
	"github.com/imstream/imstream/schemas"
)

// TestMetricsCount scrapes each role during a known flow: counters move by
// exactly the number of events sent, and the lag gauge (read from another
// role) is 0 once the fanout caught up and grows while it is stopped.
func TestMetricsCount(t *testing.T) {
	s := startStack(t, 1, 1)
	cfg := s.cfg
	ctx := context.Background()
	im := imServer(t, cfg, "m1", 1)
	defer im.Close(ctx)
	const subs, offline, rt = 5, 40, 7
	for u := int64(1); u <= subs; u++ {
		must(t, im.Subscribe(ctx, app, u, true))
	}
	testkit.Eventually(t, 30*time.Second, "presence", func() bool { on, _ := s.online(t, subs); return on })
	for i := 0; i < offline; i++ {
		must(t, im.Publish(ctx, app, 100+int64(i), schemas.Message{Cmd: 4, Sender: 1, Receiver: 100 + int64(i), Content: "x"}, ingest.Meta{}))
	}
	for i := 0; i < rt; i++ { // to an online user on the origin server: no output
		must(t, im.Publish(ctx, app, 1, schemas.Message{Cmd: 17, Sender: 2, Receiver: 1, Content: "x"}, ingest.Meta{}))
	}
	testkit.WaitCaughtUp(t, cfg, cfg.Fanout.Group, cfg.Kafka.Topics.Publish, 60*time.Second)
	testkit.WaitCaughtUp(t, cfg, cfg.Pusher.Group, cfg.Kafka.Topics.Push, 60*time.Second)

	// The fanout writes a batch's jobs as one push_jobs record (or a job
	// alone as a push_job): the pusher consumed as many records as imr.push
	// holds, and wrote one entry per job.
	ends, err := testkit.EndOffsets(ctx, cfg, cfg.Kafka.Topics.Push)
	must(t, err)
	pushRecords := 0.0
	for _, end := range ends {
		pushRecords += float64(end)
	}
	if pushRecords < 1 || pushRecords > offline {
		t.Errorf("imr.push holds %v records for %d jobs", pushRecords, offline)
	}
	exact := map[string]struct {
		admins []string
		sample string
		want   float64
	}{
		"fanout consumed":  {s.fanout, `imstream_consumed_records_total{stage="fanout",topic="imr.publish"}`, offline + rt},
		"push jobs":        {s.fanout, `imstream_fanout_outputs_total{kind="push_job"}`, offline},
		"deliveries":       {s.fanout, `imstream_fanout_outputs_total{kind="deliver"}`, 0},
		"subscribes":       {s.admins, `imstream_presence_events_total{type="subscribe"}`, subs},
		"server_up":        {s.admins, `imstream_presence_events_total{type="server_up"}`, 1},
		"pusher consumed":  {[]string{s.pusherAdmin()}, `imstream_consumed_records_total{stage="pusher",topic="imr.push"}`, pushRecords},
		"push entries":     {[]string{s.pusherAdmin()}, `imstream_push_entries_total{list="push_queue"}`, offline},
		"push list length": {[]string{s.pusherAdmin()}, `imstream_push_list_length{list="push_queue"}`, offline},
		"rejections":       {s.fanout, `imstream_rejected_records_total{reason="invalid_json",stage="fanout"}`, 0},
	}
	for name, c := range exact {
		if got := metric(t, c.admins, c.sample); got != c.want {
			t.Errorf("%s: %s = %v, want %v", name, c.sample, got, c.want)
		}
	}
	lag := func() float64 {
		// read from the presence process: the fanout may be stopped
		return metric(t, s.admins, fmt.Sprintf(`imstream_consumer_lag{group="%s",partition="0",topic="imr.publish"}`, cfg.Fanout.Group)) +
			metric(t, s.admins, fmt.Sprintf(`imstream_consumer_lag{group="%s",partition="1",topic="imr.publish"}`, cfg.Fanout.Group)) +
			metric(t, s.admins, fmt.Sprintf(`imstream_consumer_lag{group="%s",partition="2",topic="imr.publish"}`, cfg.Fanout.Group)) +
			metric(t, s.admins, fmt.Sprintf(`imstream_consumer_lag{group="%s",partition="3",topic="imr.publish"}`, cfg.Fanout.Group))
	}
	if l := lag(); l != 0 {
		t.Fatalf("lag after catching up = %v, want 0", l)
	}
	fanout := s.procs["fanout"]
	fanout.Signal(syscall.SIGSTOP)
	const more = 25
	for i := 0; i < more; i++ {
		must(t, im.Publish(ctx, app, 1000+int64(i), schemas.Message{Cmd: 4, Sender: 1, Receiver: 1000 + int64(i), Content: "y"}, ingest.Meta{}))
	}
	if l := lag(); l != more {
		t.Errorf("lag with the fanout stopped = %v, want %d", l, more)
	}
	fanout.Signal(syscall.SIGCONT)
	testkit.Eventually(t, 60*time.Second, "lag back to 0", func() bool { return lag() == 0 })
}
