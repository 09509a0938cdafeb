package deploy_test

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/imstream/imstream/ingest"
	"github.com/imstream/imstream/internal/tools/embedded"
	"github.com/imstream/imstream/internal/tools/testkit"
	"github.com/imstream/imstream/internal/wiring/role"
	"github.com/imstream/imstream/schemas"
)

// TestPromtoolCheckMetrics runs each role against kfake and redis-server,
// sends a little traffic, and lints its real /metrics with promtool.
func TestPromtoolCheckMetrics(t *testing.T) {
	if _, err := exec.LookPath("promtool"); err != nil {
		t.Fatal("promtool not found: run `make test`, which installs Debian's prometheus package")
	}
	k := testkit.Kafka(t, embedded.KafkaOptions{})
	r := testkit.Redis(t, embedded.RedisOptions{})
	cfg := testkit.Config(k.Addr, r.Addr)
	cfg.Admin.Listen = "127.0.0.1:0"
	cfg.Gateway.Listen = "127.0.0.1:0"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	admins := map[string]string{}
	for _, name := range []string{"presence", "fanout", "pusher", "gateway"} {
		env, err := role.Setup(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer env.Close()
		runs, err := env.Stages(name)
		if err != nil {
			t.Fatal(err)
		}
		go func() { _ = env.Run(ctx, runs...) }()
		admins[name] = env.Admin.Addr()
	}
	p, err := ingest.New(ctx, ingest.Config{Brokers: cfg.Kafka.Brokers, Server: "im-1", CreateTopics: true, Partitions: cfg.Kafka.Partitions})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer p.Close(ctx)
	_ = p.Subscribe(ctx, 7, 1, true)
	_ = p.Publish(ctx, 7, 2, schemas.Message{Cmd: 4, Sender: 1, Receiver: 2, Content: "hi"}, ingest.Meta{})
	testkit.WaitCaughtUp(t, cfg, cfg.Fanout.Group, cfg.Kafka.Topics.Publish, 60*time.Second)
	testkit.WaitCaughtUp(t, cfg, cfg.Pusher.Group, cfg.Kafka.Topics.Push, 60*time.Second)
	for name, addr := range admins {
		body := testkit.MetricsText(t, addr)
		if !strings.Contains(body, "imstream_consumer_lag{") {
			t.Errorf("%s: no consumer lag exported", name)
		}
		cmd := exec.Command("promtool", "check", "metrics")
		cmd.Stdin = strings.NewReader(body)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("%s: promtool check metrics: %v\n%s", name, err, out)
		}
	}
}
