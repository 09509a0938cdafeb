package kafkax_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/imstream/imstream/internal/plumbing/config"
	"github.com/imstream/imstream/internal/plumbing/kafkax"
	"github.com/imstream/imstream/internal/tools/embedded"
	"github.com/imstream/imstream/internal/tools/testkit"
)

// roundTrip connects with cfg, creates a topic, produces one record and
// consumes it in a consumer group: every Kafka path imstream uses.
func roundTrip(t *testing.T, cfg config.Kafka) error {
	t.Helper()
	conn, err := kafkax.NewConn(cfg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := conn.WaitReady(ctx); err != nil {
		return err
	}
	if err := conn.EnsureTopics(ctx, 1, map[string]int{"sec": 1}); err != nil {
		return err
	}
	w := conn.NewWriter(cfg, "sec")
	defer w.Close()
	if err := w.WriteMessages(ctx, kafka.Message{Key: []byte("k"), Value: []byte("v")}); err != nil {
		return err
	}
	got := make(chan string, 1)
	cctx, ccancel := context.WithCancel(ctx)
	defer ccancel()
	go conn.Consume(cctx, kafkax.ConsumerConfig{Group: "sec", Topics: []string{"sec"}, MaxBatch: 10, QueueSize: 10,
		RetryMin: 10 * time.Millisecond, RetryMax: time.Second, SessionTimeout: 6 * time.Second, HeartbeatInterval: time.Second,
		RebalanceTimeout: 6 * time.Second}, kafkax.HandlerFunc(func(_ context.Context, b kafkax.Batch) error {
		got <- string(b.Records[0].Value)
		return nil
	}))
	select {
	case v := <-got:
		if v != "v" {
			t.Fatalf("consumed %q", v)
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// failsQuickly: without the right settings, connecting fails with an error
// instead of hanging.
func failsQuickly(t *testing.T, cfg config.Kafka, want string) {
	t.Helper()
	conn, err := kafkax.NewConn(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	err = conn.WaitReady(ctx)
	if err == nil {
		t.Fatal("connected without the required security settings")
	}
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not say %q", err, want)
	}
}

func TestKafkaTLS(t *testing.T) {
	certs := testkit.NewCerts(t)
	k := testkit.Kafka(t, embedded.KafkaOptions{Extra: []kfake.Opt{kfake.TLS(certs.Server)}})
	cfg := config.Default().Kafka
	cfg.Brokers = []string{k.Addr}
	cfg.TLS = config.TLS{Enabled: true, CAFile: certs.CAFile}
	if err := roundTrip(t, cfg); err != nil {
		t.Fatalf("with TLS: %v", err)
	}
	plain := cfg
	plain.TLS = config.TLS{}
	failsQuickly(t, plain, "not reachable")
	untrusted := cfg
	untrusted.TLS = config.TLS{Enabled: true} // system roots do not know the test CA
	failsQuickly(t, untrusted, "not reachable")
}

func TestKafkaSASL(t *testing.T) {
	for _, mech := range []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"} {
		t.Run(mech, func(t *testing.T) {
			k := testkit.Kafka(t, embedded.KafkaOptions{Extra: []kfake.Opt{kfake.EnableSASL(), kfake.Superuser(mech, "imstream", "s3cret")}})
			cfg := config.Default().Kafka
			cfg.Brokers = []string{k.Addr}
			cfg.SASL = config.SASL{Mechanism: mech, Username: "imstream", Password: "s3cret"}
			if err := roundTrip(t, cfg); err != nil {
				t.Fatalf("with SASL %s: %v", mech, err)
			}
			wrong := cfg
			wrong.SASL.Password = "wrong"
			failsQuickly(t, wrong, "not reachable")
			none := cfg
			none.SASL = config.SASL{}
			failsQuickly(t, none, "not reachable")
		})
	}
}

// TestWriteGivesUpOnPermanentErrors: a record the broker refuses for good
// (too large) is an error, not an endless retry; a full 1 MiB-batch of
// ordinary records goes through.
func TestWriteGivesUpOnPermanentErrors(t *testing.T) {
	k := testkit.Kafka(t, embedded.KafkaOptions{}) // default message.max.bytes, 1 MiB
	cfg := config.Default().Kafka
	cfg.Brokers = []string{k.Addr}
	conn := kafkax.MustConn(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := conn.EnsureTopics(ctx, 1, map[string]int{"big": 1}); err != nil {
		t.Fatal(err)
	}
	w := conn.NewWriter(cfg, "big")
	defer w.Close()
	if err := kafkax.Write(ctx, w, kafka.Message{Value: make([]byte, 2<<20)}); err == nil || ctx.Err() != nil {
		t.Fatalf("oversized record: err = %.200v (ctx %v), want a prompt error", err, ctx.Err())
	}
	msgs := make([]kafka.Message, 20_000)
	for i := range msgs {
		msgs[i] = kafka.Message{Value: make([]byte, 200)}
	}
	if err := kafkax.Write(ctx, w, msgs...); err != nil {
		t.Fatalf("4 MB of small records: %.300v", err)
	}
}
