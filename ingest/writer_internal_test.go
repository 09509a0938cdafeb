package ingest

import (
	"context"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

// TestWriterSettings: a lone call waits at most Config.Linger for company,
// not kafka-go's default 1 s batch timeout, and is acknowledged by all
// in-sync replicas (kafka-go's default is none) — checked on the writers
// themselves rather than by timing calls.
func TestWriterSettings(t *testing.T) {
	p, err := New(context.Background(), Config{Brokers: []string{"127.0.0.1:1"}, Server: "im-1"})
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range []*lane{p.online, p.bulk} {
		w := l.writer()
		if w.BatchTimeout != 2*time.Millisecond || w.RequiredAcks != kafka.RequireAll || w.WriteTimeout != 10*time.Second {
			t.Fatalf("writer: batch timeout %s, acks %v, write timeout %s", w.BatchTimeout, w.RequiredAcks, w.WriteTimeout)
		}
	}
}
