package tick

import (
	"context"
	"testing"
	"time"
)

// A back-off's waits double from Min up to Max, each drawn from the
// upper half of its step; Reset starts again from Min; a done context
// ends a wait at once.
func TestBackoff(t *testing.T) {
	b := Backoff{Min: 100 * time.Millisecond, Max: time.Second}
	steps := []time.Duration{100, 200, 400, 800, 1000, 1000}
	for i := 0; i < 200; i++ {
		b.Reset()
		for _, s := range steps {
			s *= time.Millisecond
			if b.Step() != s {
				t.Fatalf("step %s, want %s", b.Step(), s)
			}
			if d := b.Next(); d < s/2 || d > s {
				t.Fatalf("wait %s outside [%s, %s]", d, s/2, s)
			}
		}
	}
	var zero Backoff
	if d := zero.Next(); d != 0 {
		t.Fatalf("the zero back-off waits %s", d)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	long := Backoff{Min: time.Hour, Max: time.Hour}
	if long.Wait(ctx) {
		t.Fatal("a wait ran out although its context had ended")
	}
}
