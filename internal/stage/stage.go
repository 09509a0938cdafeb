// Package stage is the one runner every consuming stage shares: presence,
// groups, fanout, pusher and the gateway's deliver consumers declare what
// they read and how they apply a batch; the runner owns everything around
// that — topic set-up, the consumer group, decoding and key checks, dead
// letters, metrics (at 0 from the start), retries and commits (through
// kafkax.Consume: a batch is committed only after Apply returned nil, and
// retried with back-off, counted and reported as stalled, until it does).
//
// A stage is a Core (its name, decoder and dead-letter writer, built once)
// plus one or more Consume calls:
//
//	core := stage.NewCore(env, "groups")
//	defer core.Close()
//	return stage.Consume(ctx, core, stage.Input{Group: …, Topics: …, Kind: schemas.KindGroup, …}, apply)
//
// where apply gets the batch's valid events, in order, and returns the
// records it rejects itself (they go to the dead-letter topic with the
// records that failed decoding) or an error to retry the batch.
package stage

import (
	"context"
	"log/slog"
	"time"

	"github.com/imstream/imstream/internal/config"
	"github.com/imstream/imstream/internal/kafkax"
	"github.com/imstream/imstream/internal/obs"
	"github.com/imstream/imstream/schemas"
)

// Env is what the runner needs from the process.
type Env struct {
	Conn    *kafkax.Conn
	Config  config.Config // its kafka, consumer and schemas sections
	Metrics *obs.Metrics
	Logger  *slog.Logger
}

// Core is a stage's shared parts: one per stage and process, however many
// inputs it consumes.
type Core struct {
	env  Env
	name string
	log  *slog.Logger
	dlq  *kafkax.DeadLetter
	dec  kafkax.Decoder
}

// NewCore builds the stage's decoder and dead-letter writer and exports its
// metric families at 0.
func NewCore(env Env, name string) *Core {
	if env.Logger == nil {
		env.Logger = slog.Default()
	}
	return &Core{env: env, name: name, log: env.Logger.With("stage", name),
		dlq: env.Metrics.DeadLetter(env.Conn, env.Config.Kafka, name),
		dec: env.Metrics.Decoder(name, env.Config.Schemas)}
}

// Log is the stage's logger.
func (c *Core) Log() *slog.Logger { return c.log }

// Reject dead-letters records outside a consumed batch (the gateway's
// frames that cannot be routed).
func (c *Core) Reject(ctx context.Context, rs []kafkax.Rejected) error { return c.dlq.Send(ctx, rs) }

// Close releases the dead-letter writer.
func (c *Core) Close() error { return c.dlq.W.Close() }

// Input declares what one Consume reads.
type Input struct {
	Group    string
	Topics   []string
	Create   []string // more topics to create at start (outputs); with Topics, when kafka.auto_create_topics
	Prepare  bool     // create Topics and Create at start (false: the caller made them)
	Kind     schemas.Kind
	MaxBatch int
	MaxWait  time.Duration // longest time spent filling a batch while input keeps arriving
	Log      *slog.Logger  // default the stage's
}

// Apply handles one batch: the valid events of one partition, in order.
// It returns records it rejects itself (dead-lettered with the batch's
// invalid ones, after it succeeded) or an error to retry the whole batch.
type Apply[T schemas.Event] func(ctx context.Context, b kafkax.Batch, evs []kafkax.Decoded[T]) ([]kafkax.Rejected, error)

// Consume runs in's consumer group until ctx ends.
func Consume[T schemas.Event](ctx context.Context, c *Core, in Input, apply Apply[T]) error {
	e := c.env
	if in.Prepare {
		if err := e.Conn.PrepareTopics(ctx, e.Config.Kafka, append(in.Topics[:len(in.Topics):len(in.Topics)], in.Create...)...); err != nil {
			return err
		}
	}
	log := in.Log
	if log == nil {
		log = c.log
	}
	h := kafkax.HandlerFunc(func(ctx context.Context, b kafkax.Batch) error {
		decoded, rejected := kafkax.DecodeBatch[T](b.Records, c.dec, in.Kind)
		more, err := apply(ctx, b, decoded)
		if err != nil {
			return err
		}
		return c.dlq.Send(ctx, append(rejected, more...))
	})
	return e.Conn.Consume(ctx, kafkax.StageConsumer(e.Config.Consumer, in.Group, in.Topics, in.MaxBatch, in.MaxWait, log, e.Metrics.Hooks(c.name)), h)
}

// Events returns the events of decoded, in order.
func Events[T schemas.Event](decoded []kafkax.Decoded[T]) []T {
	out := make([]T, len(decoded))
	for i, d := range decoded {
		out[i] = d.Event
	}
	return out
}
