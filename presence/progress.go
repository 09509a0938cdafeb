package presence

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/imstream/imstream/internal/plumbing/tick"
	"github.com/imstream/imstream/store"
)

// progress tracks, per partition this process applies, how far it has
// applied, for the store's lease judgement (store.ProgressRecorder).
type progress struct {
	mu    sync.Mutex
	parts map[int]*partProgress
}

type partProgress struct {
	pending bool      // a batch is being applied or retried
	since   time.Time // pending: origin time of its first record
	through time.Time // origin time of the last record applied
	doneAt  time.Time // when the last batch was applied
}

// busyFor is how recently a partition must have applied a batch to count
// as busy (its next batch is on the way): it is then as far as its last
// record; an idle partition is caught up.
const busyFor = time.Second

// forgetAfter drops a partition idle this long (moved to another process).
const forgetAfter = time.Minute

// recordTime is the origin time of a record (its timestamp; now if none).
func recordTime(m *kafka.Message, now time.Time) time.Time {
	if m.Time.IsZero() || m.Time.After(now) {
		return now
	}
	return m.Time
}

func (p *progress) part(id int) *partProgress {
	if p.parts == nil {
		p.parts = map[int]*partProgress{}
	}
	pp := p.parts[id]
	if pp == nil {
		pp = &partProgress{}
		p.parts[id] = pp
	}
	return pp
}

// start notes a batch of partition id whose first record is from first.
func (p *progress) start(id int, first time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if pp := p.part(id); !pp.pending {
		pp.pending, pp.since = true, first
	}
}

// done notes the batch applied, through its last record's time.
func (p *progress) done(id int, last, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pp := p.part(id)
	pp.pending, pp.through, pp.doneAt = false, last, now
}

// drop forgets partition id (revoked while its batch was pending).
func (p *progress) drop(id int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.parts, id)
}

// through is the time up to which this process has applied everything it
// was given: the first record of a pending batch, the last record of a
// busy partition, now for the others.
func (p *progress) through(now time.Time) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	t := now
	for id, pp := range p.parts {
		switch {
		case pp.pending:
			t = minTime(t, pp.since)
		case now.Sub(pp.doneAt) < busyFor:
			t = minTime(t, pp.through)
		case now.Sub(pp.doneAt) > forgetAfter:
			delete(p.parts, id)
		}
	}
	return t
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// processID names this process in the progress records.
func processID() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s:%d:%d", host, os.Getpid(), time.Now().UnixMilli())
}

// record writes this process's progress every second until ctx ends.
func (p *Presence) record(ctx context.Context, rec store.ProgressRecorder) {
	id := processID()
	tick.Every(ctx, time.Second, func() {
		now := time.Now()
		through := p.progress.through(now)
		p.behind.Set(now.Sub(through).Seconds())
		if err := rec.Progress(ctx, id, through, now); err != nil && ctx.Err() == nil {
			p.log.Debug("recording presence progress failed", "err", err) // counted in imstream_redis_errors_total{op="progress"}
		}
	})
}
