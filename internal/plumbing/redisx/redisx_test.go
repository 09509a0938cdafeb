package redisx

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestRedisLogRepeats: go-redis's repeated line is logged once per
// repeatEvery, then with how many were left out.
func TestRedisLogRepeats(t *testing.T) {
	var buf bytes.Buffer
	prev := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&buf, nil)))
	defer slog.SetDefault(prev)
	now := time.Now()
	l := &slogLogger{}
	l.quiet.Now = func() time.Time { return now }
	for i := 0; i < 100; i++ {
		l.Printf(context.Background(), "redis: connection pool: %s", "dial tcp: connection refused")
	}
	l.Printf(context.Background(), "another cause %d", 1)
	if n := strings.Count(buf.String(), "connection pool"); n != 1 {
		t.Fatalf("%d lines of the repeated cause, want 1:\n%s", n, buf.String())
	}
	if !strings.Contains(buf.String(), "another cause 1") {
		t.Errorf("another cause was left out:\n%s", buf.String())
	}
	now = now.Add(repeatEvery)
	l.Printf(context.Background(), "redis: connection pool: %s", "dial tcp: connection refused")
	if !strings.Contains(buf.String(), "repeated=99") {
		t.Errorf("the next line does not say 99 were left out:\n%s", buf.String())
	}
}
