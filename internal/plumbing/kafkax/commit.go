package kafkax

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
)

// committer commits the offsets that one generation's partition workers
// completed: every partition's in one OffsetCommit request, one request in
// flight, at most once per interval. Each offset carries commit metadata
// (incarnation token and fingerprint of the record before it; see
// incarnation.go).
//
// It commits through the Transport rather than kafka-go's
// Generation.CommitOffsets, which cannot carry metadata and whose shared
// coordinator connection made concurrent callers spin.
type committer struct {
	gen      *kafka.Generation
	client   *kafka.Client
	group    string
	interval time.Duration
	log      *slog.Logger
	hook     func(topic string, partition int, offset int64)

	workers sync.WaitGroup // the generation's partition workers
	wake    chan struct{}  // something is pending (capacity 1)
	flushMu sync.Mutex     // one commit request at a time, in order

	mu      sync.Mutex
	inc     map[tp]Incarnation // current incarnation of each partition
	pending map[tp]mark
}

type tp struct {
	topic     string
	partition int
}

// mark is an offset to commit with its metadata.
type mark struct {
	next int64
	meta commitMeta
}

func newCommitter(c *Conn, gen *kafka.Generation, cfg ConsumerConfig, log *slog.Logger) *committer {
	return &committer{
		gen: gen, client: c.Client(), group: cfg.Group, interval: cfg.CommitInterval, log: log, hook: cfg.Hooks.Committed,
		wake: make(chan struct{}, 1), inc: map[tp]Incarnation{}, pending: map[tp]mark{},
	}
}

// start records the incarnation a partition worker begins in.
func (c *committer) start(topic string, partition int, inc Incarnation) {
	c.mu.Lock()
	c.inc[tp{topic, partition}] = inc
	c.mu.Unlock()
}

// done records that every record of the partition before next has its
// effect durable; last is the record before next, in incarnation inc. A
// report from an incarnation the partition has left is ignored. It never
// blocks.
func (c *committer) done(topic string, partition int, inc Incarnation, last *kafka.Message) {
	k := tp{topic, partition}
	m := mark{next: last.Offset + 1, meta: commitMeta{inc: inc, fp: Fingerprint(last)}}
	c.mu.Lock()
	if c.inc[k] == inc {
		if cur, ok := c.pending[k]; !ok || m.next > cur.next {
			c.pending[k] = m
		}
	}
	c.mu.Unlock()
	c.signal()
}

// restart moves a partition to a new incarnation that begins at first, and
// commits that before returning, so that a crash cannot begin yet another
// incarnation over the same records.
func (c *committer) restart(ctx context.Context, topic string, partition int, inc Incarnation, first int64) error {
	k := tp{topic, partition}
	c.mu.Lock()
	c.inc[k] = inc
	c.pending[k] = mark{next: first, meta: commitMeta{inc: inc}}
	c.mu.Unlock()
	return c.flush(ctx)
}

func (c *committer) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
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
			fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = c.flush(fctx)
			cancel()
			return
		case <-c.wake:
		}
		wait := c.interval
		if err := c.flush(ctx); err != nil {
			if ctx.Err() == nil {
				c.log.Warn("commit failed; records since the last commit are replayed if the partition moves", "group", c.group, "generation", c.gen.ID, "err", err)
			}
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

// flush commits what is pending; when the commit fails the offsets stay
// pending (unless a worker moved past them meanwhile).
func (c *committer) flush(ctx context.Context) error {
	c.flushMu.Lock()
	defer c.flushMu.Unlock()
	c.mu.Lock()
	offsets := c.pending
	c.pending = map[tp]mark{}
	c.mu.Unlock()
	if len(offsets) == 0 {
		return nil
	}
	topics := map[string][]kafka.OffsetCommit{}
	for k, m := range offsets {
		topics[k.topic] = append(topics[k.topic], kafka.OffsetCommit{Partition: k.partition, Offset: m.next, Metadata: m.meta.String()})
	}
	resp, err := c.client.OffsetCommit(ctx, &kafka.OffsetCommitRequest{
		GroupID: c.group, GenerationID: int(c.gen.ID), MemberID: c.gen.MemberID, Topics: topics,
	})
	if err == nil {
	check:
		for t, ps := range resp.Topics {
			for _, p := range ps {
				if p.Error != nil {
					err = fmt.Errorf("commit %s/%d: %w", t, p.Partition, p.Error)
					break check
				}
			}
		}
	}
	if err != nil {
		c.mu.Lock()
		for k, m := range offsets {
			cur, ok := c.pending[k]
			if c.inc[k] == m.meta.inc && (!ok || cur.meta.inc != m.meta.inc || m.next > cur.next) {
				c.pending[k] = m
			}
		}
		c.mu.Unlock()
		return err
	}
	if c.hook != nil {
		for k, m := range offsets {
			c.hook(k.topic, k.partition, m.next)
		}
	}
	return nil
}
