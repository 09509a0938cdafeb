package tick

import (
	"context"
	"testing"
	"time"
)

func TestEveryStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		Every(ctx, time.Millisecond, func() {
			if calls++; calls == 3 {
				cancel()
			}
		})
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Every did not return after its context was cancelled")
	}
	if calls != 3 {
		t.Fatalf("fn ran %d times after the context was cancelled on the 3rd", calls)
	}
}

// TestNoCallAfterCancel: a tick that is ready when the context is done does
// not run fn (select picks either ready case at random; 100 tries would
// catch it about 50 times without the check).
func TestNoCallAfterCancel(t *testing.T) {
	for range 100 {
		ctx, cancel := context.WithCancel(context.Background())
		ticks := make(chan time.Time, 1)
		ticks <- time.Now()
		cancel()
		every(ctx, ticks, func() { t.Fatal("fn ran after the context was done") })
	}
}

// TestEveryRunsOncePerTick: fn runs once for each tick it receives, on
// the caller's goroutine, one at a time.
func TestEveryRunsOncePerTick(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ticks := make(chan time.Time)
	calls := make(chan int)
	n := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		every(ctx, ticks, func() { n++; calls <- n })
	}()
	for want := 1; want <= 3; want++ {
		ticks <- time.Now()
		if got := <-calls; got != want {
			t.Fatalf("call %d reported %d", want, got)
		}
	}
	cancel()
	<-done
}
