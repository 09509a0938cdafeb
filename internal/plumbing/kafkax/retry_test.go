package kafkax

import (
	"testing"
	"time"
)

// TestWaitLinesOncePerCause: the stages of one process waiting for Kafka
// together log one line per cause and back-off step, not one each.
func TestWaitLinesOncePerCause(t *testing.T) {
	r := &recent{at: map[string]time.Time{}}
	n := 0
	for range 4 { // four stages, the same failure at the same moment
		if r.first("create topics\x00[k:9092]\x00Broker Not Available", time.Minute) {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d lines for one cause, want 1", n)
	}
	if !r.first("create topics\x00[k:9092]\x00another error", time.Minute) {
		t.Error("another cause was left out")
	}
	r.at["old"] = time.Now().Add(-2 * time.Minute)
	r.first("x", time.Minute)
	if _, ok := r.at["old"]; ok {
		t.Error("keys of old lines are kept for ever")
	}
}
