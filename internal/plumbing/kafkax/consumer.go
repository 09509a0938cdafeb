package kafkax

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
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
}

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
		Logger:            nil,
		ErrorLogger:       kafka.LoggerFunc(func(msg string, args ...any) { log.Debug("kafka group: " + fmt.Sprintf(msg, args...)) }),
	})
	if err != nil {
		return fmt.Errorf("kafka: consumer group %s: %w", cfg.Group, err)
	}
	defer group.Close()
	first := true
	wait := 500 * time.Millisecond // between failed joins: doubling up to 10 s
	for {
		gen, err := group.Next(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			log.Warn("consumer group join failed; retrying", "group", cfg.Group, "brokers", c.Brokers, "retry_in", wait, "err", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(wait):
			}
			wait = min(2*wait, 10*time.Second)
			continue
		}
		wait = 500 * time.Millisecond
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
	f := newFetcher(p.conn, p.cfg, p.log, p.topic, p.partition)
	f.commits = p.commits
	if !f.init(ctx, p.cfg.Group, p.offset) {
		return
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		f.run(ctx, p.offset)
	}()
	defer wg.Wait()
	maxBatch := max(p.cfg.MaxBatch, 1)
	var rest []kafka.Message // records of the last chunk not yet handled
	inc := Legacy            // incarnation of rest
	for {
		if len(rest) == 0 {
			select {
			case c, ok := <-f.out:
				if !ok {
					return
				}
				f.taken(len(c.recs))
				rest, inc = c.recs, c.inc
			case <-ctx.Done():
				return
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
			case c, ok := <-f.out:
				if !ok {
					break fill
				}
				f.taken(len(c.recs))
				if c.inc != inc { // a new incarnation: its own batches
					rest, next = c.recs, c.inc
					break fill
				}
				n := min(len(c.recs), maxBatch-len(recs))
				recs = append(recs, c.recs[:n]...)
				rest = c.recs[n:]
			default:
				break fill
			}
		}
		if p.cfg.Hooks.Fetched != nil {
			p.cfg.Hooks.Fetched(p.topic, p.partition, len(recs))
		}
		if !p.handle(ctx, inc, recs) {
			return
		}
		if next != Legacy {
			inc, next = next, Legacy
		}
	}
}

// handle runs the handler until it succeeds or ctx ends, then hands the
// next offset to the committer.
func (p *partitionWorker) handle(ctx context.Context, inc Incarnation, recs []kafka.Message) bool {
	b := Batch{Topic: p.topic, Partition: p.partition, Inc: inc, Records: recs}
	backoff := p.cfg.RetryMin
	var failedSince time.Time
	if p.cfg.Hooks.Unstalled != nil {
		defer func() {
			if !failedSince.IsZero() {
				p.cfg.Hooks.Unstalled(p.topic, p.partition)
			}
		}()
	}
	for {
		start := time.Now()
		err := p.h.HandleBatch(ctx, b)
		if err == nil {
			if p.cfg.Hooks.Batch != nil {
				p.cfg.Hooks.Batch(p.topic, len(recs), time.Since(start))
			}
			break
		}
		if ctx.Err() != nil {
			return false
		}
		if p.cfg.Hooks.Retry != nil {
			p.cfg.Hooks.Retry(p.topic, err)
		}
		if failedSince.IsZero() {
			failedSince = start
		}
		if p.cfg.Hooks.Stalled != nil {
			p.cfg.Hooks.Stalled(p.topic, p.partition, failedSince, err)
		}
		p.log.Warn("batch failed; retrying", "topic", p.topic, "partition", p.partition,
			"first_offset", recs[0].Offset, "records", len(recs), "backoff", backoff, "err", err)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, p.cfg.RetryMax)
	}
	p.commits.done(p.topic, p.partition, inc, &recs[len(recs)-1])
	return true
}
