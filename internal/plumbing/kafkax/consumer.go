package kafkax

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/imstream/imstream/internal/plumbing/tick"
)

// Batch is a run of consecutive records of one partition, in offset order.
type Batch struct {
	Topic     string
	Partition int
	// Inc is the incarnation of the partition's log the records belong to
	// ("" for the legacy one; see incarnation.go). Sinks that drop repeats
	// by source offset keep their positions per incarnation.
	Inc     Incarnation
	Records []kafka.Message

	later *[]func() error // the consume loop's: what Later was given
}

// Later leaves wait to finish b after HandleBatch returned nil: the loop
// hands the next batches over meanwhile (up to maxLater batches ahead), and
// commits past b only once wait returned nil, and every earlier batch's
// did. wait is called once, from another goroutine (also when
// HandleBatch then fails: that attempt's waits end before the retry). When
// it fails, the loop lets the waits of the batches handed over since then
// end (none of them is committed) and reads the partition again from b's
// first record,
// as it retries a batch whose HandleBatch failed; so what wait finishes
// must be idempotent, and when it writes in order, it must not start b's
// writes before the earlier batches' succeeded (a handler chains them).
//
// It reports false when b did not come from the consume loop; the handler
// must then wait itself.
func (b Batch) Later(wait func() error) bool {
	if b.later == nil {
		return false
	}
	*b.later = append(*b.later, wait)
	return true
}

// maxLater is how many batches of a partition the loop hands over while
// earlier ones still wait (Batch.Later).
const maxLater = 16

// Handler processes batches. HandleBatch is called for one partition at a
// time (different partitions concurrently); returning nil means every
// record's effect is durable, and the loop then commits past the batch.
// Returning an error makes the loop retry the same batch after a back-off,
// so effects must be idempotent. Bad records are the handler's to
// dead-letter; they are not errors. ctx ends when the partition is revoked
// or the process stops.
type Handler interface {
	HandleBatch(ctx context.Context, b Batch) error
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, b Batch) error

// HandleBatch calls f.
func (f HandlerFunc) HandleBatch(ctx context.Context, b Batch) error { return f(ctx, b) }

// Hooks are the consume loop's metrics hooks; nil fields are skipped.
type Hooks struct {
	Fetched   func(topic string, partition int, n int)
	Batch     func(topic string, n int, d time.Duration)
	Retry     func(topic string, err error)
	Committed func(topic string, partition int, offset int64)
	Rebalance func(group string)
	Assigned  func(group string, topic string, partitions []int)
	// LogReset is called when a partition's log was found to have started
	// again (topic re-created, broker data lost, another cluster).
	LogReset func(topic string, partition int)
	// Stalled is called after every failed attempt of a batch, with when
	// the batch first failed; Unstalled when that batch finally succeeded
	// or the partition was given up (rebalance, shutdown).
	Stalled   func(topic string, partition int, since time.Time, err error)
	Unstalled func(topic string, partition int)
}

// ConsumerConfig configures Consume.
type ConsumerConfig struct {
	Group             string
	Topics            []string
	MaxBatch          int           // records per batch
	MaxWait           time.Duration // longest time spent filling a batch while input keeps arriving
	QueueSize         int           // records buffered per partition
	MaxFetchBytes     int
	CommitInterval    time.Duration // offsets of all partitions are committed together at most this often
	RetryMin          time.Duration
	RetryMax          time.Duration
	SessionTimeout    time.Duration
	HeartbeatInterval time.Duration
	RebalanceTimeout  time.Duration
	Logger            *slog.Logger
	Hooks             Hooks
}

// Consume joins the consumer group and runs h over every assigned partition
// until ctx ends. Each generation starts every partition from its committed
// offset (or the first offset when the group has none); a rebalance cancels
// the partition workers, which finish nothing further, and a new generation
// begins. Offsets are committed only for batches the handler completed.
func (c *Conn) Consume(ctx context.Context, cfg ConsumerConfig, h Handler) error {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	group, err := kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{
		ID:                cfg.Group,
		Brokers:           c.Brokers,
		Dialer:            c.Dialer,
		Topics:            cfg.Topics,
		StartOffset:       kafka.FirstOffset,
		SessionTimeout:    cfg.SessionTimeout,
		HeartbeatInterval: cfg.HeartbeatInterval,
		RebalanceTimeout:  cfg.RebalanceTimeout,
		JoinGroupBackoff:  500 * time.Millisecond,
		RetentionTime:     7 * 24 * time.Hour,
		Timeout:           5 * time.Second,
		// Partitions added to a topic (by an operator, or a deleted topic
		// re-created with the broker's default count) end the generation:
		// the next one assigns them. Without it they would wait for an
		// unrelated rebalance.
		WatchPartitionChanges:  true,
		PartitionWatchInterval: 5 * time.Second,
		Logger:                 nil,
		ErrorLogger:            kafka.LoggerFunc(func(msg string, args ...any) { log.Debug("kafka group: " + fmt.Sprintf(msg, args...)) }),
	})
	if err != nil {
		return fmt.Errorf("kafka: consumer group %s: %w", cfg.Group, err)
	}
	defer group.Close()
	first := true
	wait := tick.Backoff{Min: 500 * time.Millisecond, Max: 10 * time.Second} // between failed joins
	for {
		gen, err := group.Next(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			log.Warn("consumer group join failed; retrying", "group", cfg.Group, "brokers", c.Brokers, "retry_in", wait.Step(), "err", err)
			if !wait.Wait(ctx) {
				return nil
			}
			continue
		}
		wait.Reset()
		if !first && cfg.Hooks.Rebalance != nil {
			cfg.Hooks.Rebalance(cfg.Group)
		}
		first = false
		commits := newCommitter(c, gen, cfg, log)
		for _, topic := range cfg.Topics {
			assigns := gen.Assignments[topic]
			parts := make([]int, 0, len(assigns))
			for _, a := range assigns {
				parts = append(parts, a.ID)
				p := &partitionWorker{conn: c, cfg: cfg, commits: commits, log: log, h: h, topic: topic, partition: a.ID, offset: a.Offset}
				commits.workers.Add(1)
				gen.Start(func(ctx context.Context) {
					defer commits.workers.Done()
					p.run(ctx)
				})
			}
			log.Info("partitions assigned", "group", cfg.Group, "generation", gen.ID, "topic", topic, "partitions", parts)
			if cfg.Hooks.Assigned != nil {
				cfg.Hooks.Assigned(cfg.Group, topic, parts)
			}
		}
		gen.Start(commits.run)
	}
}

type partitionWorker struct {
	conn      *Conn
	cfg       ConsumerConfig
	commits   *committer
	log       *slog.Logger
	h         Handler
	topic     string
	partition int
	offset    int64
}

func (p *partitionWorker) run(ctx context.Context) {
	f := p.fetcher()
	if !f.init(ctx, p.cfg.Group, p.offset) {
		return
	}
	at := p.offset
	st := &stall{backoff: tick.Backoff{Min: p.cfg.RetryMin, Max: p.cfg.RetryMax}}
	defer st.clear(p)
	for {
		r, again := p.consume(ctx, f, at, st)
		if !again {
			return
		}
		// What a batch left to finish later failed: read the partition
		// again from that batch, after a back-off.
		backoff := st.failed(p, r.err, time.Now())
		p.log.Warn("batch failed after it was handed over; reading the partition again from it", "topic", p.topic, "partition", p.partition,
			"first_offset", r.first, "backoff", backoff, "err", r.err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		f = p.fetcher()
		f.inc, f.lastOff, f.lastFP = r.inc, r.prevOff, r.prevFP
		at = r.first
	}
}

func (p *partitionWorker) fetcher() *fetcher {
	f := newFetcher(p.conn, p.cfg, p.log, p.topic, p.partition)
	f.commits = p.commits
	return f
}

// consume reads the partition from offset at and hands its batches over
// until ctx ends (false) or a batch's later part failed (true, with where
// to read again).
func (p *partitionWorker) consume(ctx context.Context, f *fetcher, at int64, st *stall) (rewind, bool) {
	// The record before the next batch, for the log check of a read
	// again (read before the fetcher runs: it moves them).
	prevInc, prevOff, prevFP := f.inc, f.lastOff, f.lastFP
	fctx, stopFetch := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		f.run(fctx, at)
	}()
	c := newCompleter(p, st)
	go c.run()
	defer func() {
		c.close() // every wait handed over has ended: nothing is in flight
		stopFetch()
		wg.Wait()
	}()
	maxBatch := max(p.cfg.MaxBatch, 1)
	var rest []kafka.Message // records of the last chunk not yet handled
	inc := Legacy            // incarnation of rest
	for {
		if len(rest) == 0 {
			select {
			case ch, ok := <-f.out:
				if !ok {
					return rewind{}, false
				}
				f.taken(len(ch.recs))
				rest, inc = ch.recs, ch.inc
			case <-c.failed:
				return c.rewind, true
			case <-ctx.Done():
				return rewind{}, false
			}
		}
		next := Legacy // set when rest is of a new incarnation
		n := min(len(rest), maxBatch)
		recs := rest[:n:n]
		rest = rest[n:]
		deadline := time.Now().Add(p.cfg.MaxWait)
	fill:
		// Take what is already waiting, up to MaxBatch records or MaxWait;
		// when nothing is waiting, flush at once (milliseconds at low load).
		for len(rest) == 0 && len(recs) < maxBatch && time.Now().Before(deadline) {
			select {
			case ch, ok := <-f.out:
				if !ok {
					break fill
				}
				f.taken(len(ch.recs))
				if ch.inc != inc { // a new incarnation: its own batches
					rest, next = ch.recs, ch.inc
					break fill
				}
				n := min(len(ch.recs), maxBatch-len(recs))
				recs = append(recs, ch.recs[:n]...)
				rest = ch.recs[n:]
			default:
				break fill
			}
		}
		if p.cfg.Hooks.Fetched != nil {
			p.cfg.Hooks.Fetched(p.topic, p.partition, len(recs))
		}
		if inc != prevInc { // a new incarnation: nothing before it to check
			prevInc, prevOff, prevFP = inc, -1, ""
		}
		switch p.handle(ctx, inc, recs, c, prevOff, prevFP) {
		case stopped:
			return rewind{}, false
		case rewinding:
			return c.rewind, true
		}
		last := &recs[len(recs)-1]
		prevOff, prevFP = last.Offset, Fingerprint(last)
		if next != Legacy {
			inc, next = next, Legacy
		}
	}
}

// How handle ended.
const (
	handled = iota
	stopped
	rewinding // an earlier batch's later part failed
)

// handle runs the handler until it succeeds, ctx ends or an earlier
// batch's later part failed, then hands the batch to the committer,
// through c when it or an earlier batch left something to finish later.
// prevOff and prevFP are the record before the batch (-1: unknown).
func (p *partitionWorker) handle(ctx context.Context, inc Incarnation, recs []kafka.Message, c *completer, prevOff int64, prevFP string) int {
	var waits []func() error
	b := Batch{Topic: p.topic, Partition: p.partition, Inc: inc, Records: recs, later: &waits}
	st := &stall{backoff: tick.Backoff{Min: p.cfg.RetryMin, Max: p.cfg.RetryMax}} // this batch's failures
	defer st.clear(p)
	for {
		start := time.Now()
		err := p.h.HandleBatch(ctx, b)
		if err == nil {
			if p.cfg.Hooks.Batch != nil {
				p.cfg.Hooks.Batch(p.topic, len(recs), time.Since(start))
			}
			break
		}
		for _, w := range waits { // a failed attempt's: ended, not counted
			_ = w()
		}
		waits = waits[:0]
		if ctx.Err() != nil {
			return stopped
		}
		backoff := st.failed(p, err, start)
		p.log.Warn("batch failed; retrying", "topic", p.topic, "partition", p.partition,
			"first_offset", recs[0].Offset, "records", len(recs), "backoff", backoff, "err", err)
		select {
		case <-ctx.Done():
			return stopped
		case <-c.failed:
			return rewinding
		case <-time.After(backoff):
		}
	}
	last := &recs[len(recs)-1]
	if len(waits) == 0 && c.idle() {
		p.commits.done(p.topic, p.partition, inc, last)
		return handled
	}
	return c.add(ctx, laterBatch{inc: inc, first: recs[0].Offset, last: last, waits: waits, prevOff: prevOff, prevFP: prevFP})
}

// laterBatch is a handled batch waiting for what it left to finish later
// (or for an earlier batch's) before it is committed.
type laterBatch struct {
	inc     Incarnation
	first   int64
	last    *kafka.Message
	waits   []func() error
	prevOff int64 // the record before first, for the log check of a read again
	prevFP  string
}

// rewind is where to read a partition again after a batch's later part
// failed.
type rewind struct {
	inc     Incarnation
	first   int64
	prevOff int64
	prevFP  string
	err     error
}

// completer waits, in order, for what handed-over batches left to finish
// later, and commits each batch once it and every earlier one finished.
// After the first failure it commits nothing more, and only waits for the
// rest to end.
type completer struct {
	p       *partitionWorker
	st      *stall
	queue   chan laterBatch
	pending atomic.Int32  // batches added and not yet finished
	failed  chan struct{} // closed at the first failure, rewind set before
	rewind  rewind
	done    chan struct{}
}

func newCompleter(p *partitionWorker, st *stall) *completer {
	return &completer{p: p, st: st, queue: make(chan laterBatch, maxLater), failed: make(chan struct{}), done: make(chan struct{})}
}

// idle reports whether every batch added has finished.
func (c *completer) idle() bool { return c.pending.Load() == 0 }

// add queues b, waiting while maxLater batches are queued; it reports
// stopped when ctx ended first, rewinding when a batch failed first (b's
// waits have then ended too, uncommitted: nothing is left in flight).
func (c *completer) add(ctx context.Context, b laterBatch) int {
	c.pending.Add(1)
	end := stopped
	select {
	case c.queue <- b:
		return handled
	case <-ctx.Done():
	case <-c.failed:
		end = rewinding
	}
	c.pending.Add(-1)
	for _, w := range b.waits {
		_ = w()
	}
	return end
}

func (c *completer) run() {
	defer close(c.done)
	p := c.p
	failed := false
	for b := range c.queue {
		var err error
		for _, w := range b.waits {
			err = errors.Join(err, w())
		}
		switch {
		case failed: // read again: nothing after the failure is committed
		case err != nil:
			failed = true
			c.rewind = rewind{inc: b.inc, first: b.first, prevOff: b.prevOff, prevFP: b.prevFP, err: err}
			close(c.failed)
		default:
			p.commits.done(p.topic, p.partition, b.inc, b.last)
			c.st.ok(p)
		}
		c.pending.Add(-1)
	}
}

// close waits until every batch added has finished.
func (c *completer) close() {
	close(c.queue)
	<-c.done
}

// stall is a run of failures — of one batch's HandleBatch, or of a
// partition's later parts: the back-off before trying again, and since
// when it has failed.
type stall struct {
	mu      sync.Mutex
	since   time.Time
	backoff tick.Backoff
}

// failed records a failure of an attempt begun at (the stall's start, if
// it is the first) and returns the back-off before trying again.
func (s *stall) failed(p *partitionWorker, err error, at time.Time) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.since.IsZero() {
		s.since = at
	}
	if p.cfg.Hooks.Retry != nil {
		p.cfg.Hooks.Retry(p.topic, err)
	}
	if p.cfg.Hooks.Stalled != nil {
		p.cfg.Hooks.Stalled(p.topic, p.partition, s.since, err)
	}
	return s.backoff.Next()
}

// ok records a batch committed: a stall, if any, is over.
func (s *stall) ok(p *partitionWorker) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.since.IsZero() {
		s.since = time.Time{}
		s.backoff.Reset()
		if p.cfg.Hooks.Unstalled != nil {
			p.cfg.Hooks.Unstalled(p.topic, p.partition)
		}
	}
}

// clear ends a stall, if any: the batch succeeded or was given up, or
// the partition was.
func (s *stall) clear(p *partitionWorker) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.since.IsZero() && p.cfg.Hooks.Unstalled != nil {
		p.cfg.Hooks.Unstalled(p.topic, p.partition)
	}
}
