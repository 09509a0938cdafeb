package kafkax

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
)

// committer commits the offsets that one generation's partition workers
// completed: every partition's in one OffsetCommit request, one request in
// flight, at most once per interval.
//
// kafka-go's Generation.CommitOffsets shares one coordinator connection, and
// callers waiting on it concurrently spin (each peeks at the other's
// response, takes and drops the read lock, resets the socket deadline):
// with a commit per partition per batch that spin cost a third of every
// stage's CPU in `imstream bench`.
type committer struct {
	gen      *kafka.Generation
	group    string
	interval time.Duration
	log      *slog.Logger
	hook     func(topic string, partition int, offset int64)

	workers sync.WaitGroup // the generation's partition workers
	wake    chan struct{}  // something is pending (capacity 1)

	mu      sync.Mutex
	pending map[string]map[int]int64 // topic → partition → next offset
}

func newCommitter(gen *kafka.Generation, cfg ConsumerConfig, log *slog.Logger) *committer {
	return &committer{
		gen: gen, group: cfg.Group, interval: cfg.CommitInterval, log: log, hook: cfg.Hooks.Committed,
		wake: make(chan struct{}, 1), pending: map[string]map[int]int64{},
	}
}

// done records that every record of the partition before next has its
// effect durable. It never blocks.
func (c *committer) done(topic string, partition int, next int64) {
	c.mu.Lock()
	c.setLocked(topic, partition, next)
	c.mu.Unlock()
	c.signal()
}

func (c *committer) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *committer) setLocked(topic string, partition int, next int64) {
	ps := c.pending[topic]
	if ps == nil {
		ps = map[int]int64{}
		c.pending[topic] = ps
	}
	if cur, ok := ps[partition]; !ok || next > cur {
		ps[partition] = next
	}
}

// run commits until the generation ends; then, once every worker has
// stopped, it commits what they completed last. That final commit may be
// refused when the group already moved on: the next owner replays those
// records, which the idempotent sinks absorb.
func (c *committer) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			c.workers.Wait()
			c.flush()
			return
		case <-c.wake:
		}
		wait := c.interval
		if !c.flush() {
			c.signal() // try again after a pause, even if no worker reports more
			wait = max(wait, time.Second)
		}
		if wait > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(wait):
			}
		}
	}
}

// flush commits what is pending; it reports false when the commit failed
// (the offsets stay pending).
func (c *committer) flush() bool {
	c.mu.Lock()
	offsets := c.pending
	c.pending = map[string]map[int]int64{}
	c.mu.Unlock()
	if len(offsets) == 0 {
		return true
	}
	if err := c.gen.CommitOffsets(offsets); err != nil {
		// Keep them for the next try unless a worker moved past them.
		c.mu.Lock()
		for t, ps := range offsets {
			for p, next := range ps {
				c.setLocked(t, p, next)
			}
		}
		c.mu.Unlock()
		c.log.Warn("commit failed; records since the last commit are replayed if the partition moves", "group", c.group, "generation", c.gen.ID, "err", err)
		return false
	}
	if c.hook != nil {
		for t, ps := range offsets {
			for p, next := range ps {
				c.hook(t, p, next)
			}
		}
	}
	return true
}
