// Package tick runs periodic work: heartbeats, collection passes, probes
// and status lines share its one loop.
package tick

import (
	"context"
	"time"
)

// Every calls fn every d until ctx is done. fn runs on the caller's
// goroutine, so calls never overlap; ticks that fall while fn runs are
// skipped, not queued.
func Every(ctx context.Context, d time.Duration, fn func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fn()
		}
	}
}
