package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/imstream/imstream/internal/plumbing/kafkax"
	"github.com/imstream/imstream/schemas"
)

// Delivery is one record of an IM server's deliver topic: the publish
// event as its producer wrote it, with Src naming where it came from.
type Delivery struct {
	*schemas.Publish
	Value     []byte // the record as read (the event's JSON with src)
	Partition int    // of the deliver topic
	Offset    int64  // in the deliver topic
}

// DeliveryHandler hands a batch of deliveries (one deliver partition, in
// order, repeats already dropped) to the server's local connections. The
// batch is committed only after it returns nil; an error retries the same
// batch with back-off, so a handler that cannot deliver slows the consumer
// down instead of losing anything.
type DeliveryHandler func(ctx context.Context, batch []Delivery) error

// DeliveriesConfig configures ConsumeDeliveries.
type DeliveriesConfig struct {
	Brokers []string // required
	Server  string   // required: this IM server's id, as in Config.Server
	// Topic is the deliver topic; default "imr.deliver." + Server.
	Topic string
	// Group is the consumer group; default Topic, so that every process
	// of one server id shares the work and a restart resumes where the last
	// one committed.
	Group    string
	MaxBatch int           // default 500: deliveries per handler call
	Dialer   *kafka.Dialer // optional: TLS/SASL settings
	Logger   *slog.Logger  // default slog.Default()

	// Hooks for metrics; nil fields are skipped.
	OnDelivered func(n int)                 // deliveries handed to the handler
	OnRepeats   func(n int)                 // deliveries dropped as repeats (same src as one handed over)
	OnInvalid   func(rec []byte, err error) // records that are not valid deliveries (skipped)
}

// ConsumeDeliveries consumes the server's deliver topic until ctx ends:
// it decodes each record, drops repeats by src (docs/protocol.md §6),
// hands each partition's batch to h and commits after h returned. It
// returns nil when ctx ends (after committing what h finished), or an
// error when it cannot start.
func ConsumeDeliveries(ctx context.Context, cfg DeliveriesConfig, h DeliveryHandler) error {
	if len(cfg.Brokers) == 0 {
		return errors.New("ingest: Brokers is required")
	}
	if !schemas.ValidServerID(cfg.Server) {
		return fmt.Errorf("ingest: Server %q must match [A-Za-z0-9._-]{1,64}", cfg.Server)
	}
	if cfg.Topic == "" {
		cfg.Topic = "imr.deliver." + cfg.Server
	}
	if cfg.Group == "" {
		cfg.Group = cfg.Topic
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 500
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Dialer == nil {
		cfg.Dialer = &kafka.Dialer{Timeout: 10 * time.Second, DualStack: true}
	}
	conn := &kafkax.Conn{Brokers: cfg.Brokers, Dialer: cfg.Dialer,
		Transport: &kafka.Transport{TLS: cfg.Dialer.TLS, SASL: cfg.Dialer.SASLMechanism}}
	d := &deliveries{cfg: cfg, h: h, repeats: NewRepeats()}
	cc := kafkax.ConsumerConfig{
		Group: cfg.Group, Topics: []string{cfg.Topic}, MaxBatch: cfg.MaxBatch, MaxWait: 5 * time.Millisecond,
		QueueSize: 4 * cfg.MaxBatch, CommitInterval: 200 * time.Millisecond,
		RetryMin: 50 * time.Millisecond, RetryMax: 5 * time.Second,
		SessionTimeout: 10 * time.Second, HeartbeatInterval: time.Second, RebalanceTimeout: 10 * time.Second,
		Logger: cfg.Logger.With("topic", cfg.Topic),
	}
	return conn.Consume(ctx, cc, kafkax.HandlerFunc(d.handle))
}

type deliveries struct {
	cfg     DeliveriesConfig
	h       DeliveryHandler
	repeats *Repeats
}

// handle decodes and filters a batch, hands it over, and reports it to the
// hooks once the handler succeeded (a retried batch is counted once).
func (d *deliveries) handle(ctx context.Context, b kafkax.Batch) error {
	batch := make([]Delivery, 0, len(b.Records))
	type bad struct {
		m   *kafka.Message
		err error
	}
	var invalid []bad
	for i := range b.Records {
		kafkax.Yield(i)
		m := &b.Records[i]
		ev, err := schemas.DecodeKind(m.Value, 0, schemas.KindPublish)
		if err != nil {
			invalid = append(invalid, bad{m, err})
			continue
		}
		batch = append(batch, Delivery{Publish: ev.(*schemas.Publish), Value: m.Value, Partition: m.Partition, Offset: m.Offset})
	}
	fresh, handed := d.repeats.Filter(b.Partition, batch)
	if len(fresh) > 0 {
		if err := d.h(ctx, fresh); err != nil {
			return err
		}
	}
	handed()
	for _, x := range invalid {
		d.cfg.Logger.Warn("skipped an invalid deliver record", "partition", x.m.Partition, "offset", x.m.Offset, "err", x.err)
		if d.cfg.OnInvalid != nil {
			d.cfg.OnInvalid(x.m.Value, x.err)
		}
	}
	if n := len(batch) - len(fresh); n > 0 && d.cfg.OnRepeats != nil {
		d.cfg.OnRepeats(n)
	}
	if len(fresh) > 0 && d.cfg.OnDelivered != nil {
		d.cfg.OnDelivered(len(fresh))
	}
	return nil
}

// Repeats drops deliveries an IM server already handed over: the fanout
// produces deliveries at least once, and a record it produced again carries
// the same src. It keeps, per (deliver partition, src topic@incarnation,
// src partition, appid), the highest src offset handed over; one app's
// records of one source partition reach one deliver partition in source
// order (fair share may route one app's later than another's: the appid
// is part of the key for that), so a record at or below it is a repeat.
// Safe for concurrent use by the partitions' workers.
type Repeats struct {
	mu   sync.Mutex
	last map[repeatKey]int64
}

type repeatKey struct {
	partition    int    // of the deliver topic
	stream       string // schemas.Source.Stream: topic@inc
	srcPartition int
	appid        int64
}

// NewRepeats returns an empty filter.
func NewRepeats() *Repeats { return &Repeats{last: map[repeatKey]int64{}} }

// Filter returns the deliveries of one deliver partition's batch that were
// not handed over before, in order, and handed, to call once they have
// been (a batch that fails is filtered the same way when retried).
// Deliveries without src are never repeats.
func (r *Repeats) Filter(partition int, batch []Delivery) (fresh []Delivery, handed func()) {
	seen := map[repeatKey]int64{}
	r.mu.Lock()
	defer r.mu.Unlock()
	fresh = batch[:0:0]
	for _, d := range batch {
		if d.Src == nil {
			fresh = append(fresh, d)
			continue
		}
		k := repeatKey{partition, d.Src.Stream(), d.Src.Partition, d.AppID}
		last, ok := seen[k]
		if !ok {
			last, ok = r.last[k]
		}
		if ok && d.Src.Offset <= last {
			continue
		}
		seen[k] = d.Src.Offset
		fresh = append(fresh, d)
	}
	return fresh, func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		for k, v := range seen {
			r.last[k] = v
		}
	}
}
