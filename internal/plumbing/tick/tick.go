// Package tick runs periodic work: heartbeats, collection passes, probes
// and status lines share its one loop. Quiet paces repeated log lines.
package tick

import (
	"context"
	"time"
)

// Every calls fn every d until ctx is done. fn runs on the caller's
// goroutine, so calls never overlap; ticks that fall while fn runs are
// skipped, not queued. Once ctx is done fn is not called again, even when
// a tick was ready at the same moment.
func Every(ctx context.Context, d time.Duration, fn func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	every(ctx, t.C, fn)
}

// every is Every's loop on a given tick channel (tests drive it by hand).
func every(ctx context.Context, ticks <-chan time.Time, fn func()) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticks:
			if ctx.Err() != nil {
				return
			}
			fn()
		}
	}
}
