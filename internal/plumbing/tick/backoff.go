package tick

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff is every retry loop's wait: its step starts at Min and doubles
// up to Max after each failure, and each wait is drawn at random from
// [step/2, step], so that processes that failed together (a broker or
// Redis that went away under all of them) do not all retry at once. Reset
// after a success. The zero value waits nothing; not safe for concurrent
// use.
type Backoff struct {
	Min, Max time.Duration
	step     time.Duration
}

// Step is the step the next wait is drawn from, for log lines.
func (b *Backoff) Step() time.Duration { return max(b.step, b.Min) }

// Next returns the wait before the next attempt and doubles the step.
func (b *Backoff) Next() time.Duration {
	d := b.Step()
	b.step = min(2*d, max(b.Max, b.Min))
	if d <= 0 {
		return 0
	}
	return d/2 + rand.N(d/2+1)
}

// Reset starts the steps again from Min.
func (b *Backoff) Reset() { b.step = 0 }

// Wait waits Next(), or until ctx ends: it reports whether the wait ran
// out (false: ctx ended).
func (b *Backoff) Wait(ctx context.Context) bool {
	t := time.NewTimer(b.Next())
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
