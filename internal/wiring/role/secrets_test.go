package role_test

import (
	"context"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/imstream/imstream/internal/plumbing/config"
	"github.com/imstream/imstream/internal/tools/embedded"
	"github.com/imstream/imstream/internal/tools/testkit"
	"github.com/imstream/imstream/internal/wiring/role"
)

// TestSecretsStayOut runs every role with Kafka SASL and a Redis password —
// right ones, then a wrong Redis password so that errors get logged — and
// checks that no secret shows in the logs, /metrics or /readyz.
func TestSecretsStayOut(t *testing.T) {
	const kafkaSecret, redisSecret, wrongSecret = "kafka-hunter2", "redis-hunter2", "wrong-hunter2"
	k := testkit.Kafka(t, embedded.KafkaOptions{Extra: []kfake.Opt{kfake.EnableSASL(), kfake.Superuser("PLAIN", "imstream", kafkaSecret)}})
	r := testkit.Redis(t, embedded.RedisOptions{Extra: []string{"--requirepass", redisSecret}})
	for _, redisPassword := range []string{redisSecret, wrongSecret} {
		cfg := testkit.Config(k.Addr, r.Addr)
		cfg.Kafka.SASL = config.SASL{Mechanism: "PLAIN", Username: "imstream", Password: kafkaSecret}
		cfg.Redis.Password = redisPassword
		cfg.Admin.Listen = "127.0.0.1:0"
		cfg.Gateway.Listen = "127.0.0.1:0"
		cfg.Log.Level = "debug"
		cfg.Log.Format = "json"
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}

		pr, pw, _ := os.Pipe()
		stderr := os.Stderr
		os.Stderr = pw
		env, err := role.Setup(context.Background(), cfg)
		os.Stderr = stderr
		if err != nil {
			t.Fatal(err)
		}
		logs := make(chan string)
		go func() { b, _ := io.ReadAll(pr); logs <- string(b) }()
		runs, err := env.Stages("presence", "fanout", "pusher", "gateway")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 6*time.Second)
		go func() { _ = env.Run(ctx, runs...) }()
		time.Sleep(4 * time.Second)
		var pages []string
		for _, path := range []string{"/metrics", "/readyz", "/healthz"} {
			resp, err := http.Get("http://" + env.Admin.Addr() + path)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			pages = append(pages, path+"\n"+string(b))
		}
		cancel()
		time.Sleep(500 * time.Millisecond)
		env.Close()
		pw.Close()
		all := <-logs + strings.Join(pages, "\n")
		if !strings.Contains(all, "imstream_consumer_lag") {
			t.Fatalf("no metrics scraped:\n%s", all)
		}
		for _, secret := range []string{kafkaSecret, redisSecret, wrongSecret} {
			if strings.Contains(all, secret) {
				t.Errorf("secret %q appears in logs or admin pages:\n%s", secret, all)
			}
		}
	}
}
