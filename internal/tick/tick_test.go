package tick_test

import (
	"context"
	"testing"
	"time"

	"github.com/imstream/imstream/internal/tick"
)

func TestEveryStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick.Every(ctx, time.Millisecond, func() {
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

func TestEverySkipsTicksWhileBusy(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	calls := 0
	tick.Every(ctx, time.Millisecond, func() {
		calls++
		time.Sleep(30 * time.Millisecond)
	})
	// 100 ticks of 1 ms fall in 100 ms; a 30 ms fn leaves room for ~4 calls.
	if calls > 6 {
		t.Fatalf("fn ran %d times in 100 ms though each call takes 30 ms: ticks were queued", calls)
	}
}
