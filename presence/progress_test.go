package presence

import (
	"testing"
	"time"
)

// TestProgressThrough: a process's progress is the first record of a batch
// it is applying or retrying, the last record of a partition it applied
// within busyFor, and now for an idle (caught-up) partition; a revoked
// partition no longer counts.
func TestProgressThrough(t *testing.T) {
	var p progress
	now := time.Unix(1_000_000, 0)
	at := func(d time.Duration) time.Time { return now.Add(d) }
	check := func(when time.Time, want time.Time) {
		t.Helper()
		if got := p.through(when); !got.Equal(want) {
			t.Fatalf("through(%s) = %s, want %s", when.Sub(now), got.Sub(now), want.Sub(now))
		}
	}
	check(now, now) // nothing applied yet: nothing held
	p.start(0, at(-40*time.Second))
	check(now, at(-40*time.Second)) // failing since a record of 40 s ago (Redis full)
	p.start(0, at(-10*time.Second)) // the retry keeps the first record's time
	check(at(time.Minute), at(-40*time.Second))
	p.done(0, at(-39*time.Second), now) // applied, still far behind: busy
	check(at(500*time.Millisecond), at(-39*time.Second))
	check(at(2*time.Second), at(2*time.Second)) // no batch for a while: caught up
	p.start(1, at(-5*time.Second))
	p.drop(1) // revoked while pending
	check(at(3*time.Second), at(3*time.Second))
}
