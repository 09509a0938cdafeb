package fanout

import (
	"regexp"
	"testing"

	"github.com/segmentio/kafka-go"

	"github.com/imstream/imstream/schemas"
)

// TestTraceHeaders: a producer's traceparent is carried as it is; without
// one, the event's id (or its coordinates) gives a valid W3C traceparent,
// the same for every output and every process.
func TestTraceHeaders(t *testing.T) {
	set := kafka.Header{Key: HeaderTraceparent, Value: []byte("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")}
	m := &kafka.Message{Topic: "imr.publish", Partition: 3, Offset: 42, Headers: []kafka.Header{{Key: "format", Value: []byte("x")}, set}}
	ev := &schemas.Publish{Header: schemas.Header{ID: "im-1:8812"}}
	for _, derive := range []bool{false, true} {
		if got := traceHeaders(m, ev, "r1", derive); len(got) != 1 || string(got[0].Value) != string(set.Value) {
			t.Fatalf("producer's traceparent not carried: %v", got)
		}
	}
	m.Headers = nil
	if got := traceHeaders(m, ev, "r1", false); got != nil {
		t.Fatalf("fanout.traceparent producer, none set: %v, want none", got)
	}
	valid := regexp.MustCompile(`^00-[0-9a-f]{32}-[0-9a-f]{16}-01$`)
	a, b := traceHeaders(m, ev, "r1", true), traceHeaders(m, ev, "r2", true)
	if !valid.Match(a[0].Value) || string(a[0].Value) != string(b[0].Value) || a[0].Key != HeaderTraceparent {
		t.Fatalf("derived from the id: %s and %s", a[0].Value, b[0].Value)
	}
	ev.ID = ""
	c, d := traceHeaders(m, ev, "r1", true), traceHeaders(m, ev, "r2", true)
	if !valid.Match(c[0].Value) || string(c[0].Value) == string(d[0].Value) || string(c[0].Value) == string(a[0].Value) {
		t.Fatalf("derived from the coordinates: %s, %s (id: %s)", c[0].Value, d[0].Value, a[0].Value)
	}
}

// The derived traceparent never changes between releases: processes of
// two releases side by side (a rolling upgrade) derive the same trace id
// for one event.
func TestDerivedTraceparentStable(t *testing.T) {
	for _, c := range []struct {
		id, inc string
		p       int
		o       int64
		want    string
	}{
		{"im-1:8812", "", 0, 0, "00-097ee383799a59ddc4ce7343ccf391b6-1029cfb945bcf0bf-01"},
		{"", "r1", 3, 42, "00-f3b401c94c4034587cc93193cc100fe5-73e76f708d4bc48a-01"},
		{"", "", 7, 1 << 40, "00-a77b783f4d224a4007580e987750ba6d-812257507327182a-01"},
	} {
		if got := string(DerivedTraceparent(c.id, c.inc, c.p, c.o)); got != c.want {
			t.Errorf("DerivedTraceparent(%q, %q, %d, %d) = %s, want %s", c.id, c.inc, c.p, c.o, got, c.want)
		}
	}
}
