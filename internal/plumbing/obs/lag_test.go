package obs_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/imstream/imstream/internal/plumbing/kafkax"
	"github.com/imstream/imstream/internal/plumbing/obs"
	"github.com/imstream/imstream/internal/tools/embedded"
	"github.com/imstream/imstream/internal/tools/testkit"
)

// TestLagCollectorSaysWhy: a group whose lag cannot be read is exported as
// imstream_consumer_lag_unreadable 1 and logged once with the reason, not at
// every scrape; once it can be read again the lag is exported and that is
// logged once too.
func TestLagCollectorSaysWhy(t *testing.T) {
	k := testkit.Kafka(t, embedded.KafkaOptions{})
	conn := kafkax.MustConn(testkit.Config(k.Addr, "127.0.0.1:1").Kafka)
	var logs bytes.Buffer
	lc := obs.NewLagCollector(conn, []obs.GroupTopic{{Group: "g", Topic: "t"}})
	lc.Log = slog.New(slog.NewTextHandler(&logs, nil))
	reg := prometheus.NewRegistry()
	reg.MustRegister(lc)
	scrape := func() string {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				b.WriteString(mf.GetName() + " " + m.GetGauge().String() + "\n")
			}
		}
		return b.String()
	}
	for range 3 {
		if got := scrape(); !strings.Contains(got, "imstream_consumer_lag_unreadable value:1") || strings.Contains(got, "imstream_consumer_lag ") {
			t.Fatalf("topic missing: scrape\n%s", got)
		}
	}
	if n := strings.Count(logs.String(), "consumer lag unreadable"); n != 1 || !strings.Contains(logs.String(), "does not exist yet") || strings.Contains(logs.String(), "WARN") {
		t.Fatalf("3 failing scrapes logged %d times, want once, not as a warning, with the reason:\n%s", n, logs.String())
	}
	if err := conn.EnsureTopics(context.Background(), 1, map[string]int{"t": 2}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if got := scrape(); !strings.Contains(got, "imstream_consumer_lag_unreadable value:0") || strings.Count(got, "imstream_consumer_lag ") != 2 {
			t.Fatalf("topic created: scrape\n%s", got)
		}
	}
	if n := strings.Count(logs.String(), "consumer lag readable again"); n != 1 {
		t.Fatalf("recovery logged %d times, want once:\n%s", n, logs.String())
	}
}
