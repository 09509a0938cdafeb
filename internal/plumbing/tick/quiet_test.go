package tick

import (
	"testing"
	"time"
)

// TestQuiet: one line per key and window, with how many were held back;
// other keys are not held by it; old keys are forgotten. The clock is the
// test's.
func TestQuiet(t *testing.T) {
	now := time.Unix(1000, 0)
	q := Quiet{Now: func() time.Time { return now }}
	n := 0
	for range 4 {
		if ok, _ := q.Allow("a", time.Minute); ok {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d lines of one key in a window, want 1", n)
	}
	if ok, _ := q.Allow("b", time.Minute); !ok {
		t.Error("another key was held back")
	}
	q.Allow("c", 0)
	q.Allow("c", time.Hour) // held back: c stays remembered
	now = now.Add(time.Minute)
	if ok, held := q.Allow("a", time.Minute); !ok || held != 3 {
		t.Errorf("after the window: ok %v, held %d; want true, 3", ok, held)
	}
	now = now.Add(2 * time.Minute)
	q.Allow("d", time.Minute)
	if _, ok := q.at["b"]; ok {
		t.Error("a key let through 3 minutes ago with nothing held back is kept")
	}
	if q.held["c"] != 1 {
		t.Error("a key with a line held back was forgotten within the hour")
	}
	now = now.Add(time.Hour)
	q.Allow("d", time.Minute)
	if _, ok := q.at["c"]; ok {
		t.Error("a key is kept for more than an hour")
	}
}
