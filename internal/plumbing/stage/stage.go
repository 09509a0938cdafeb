// Package stage is the one runner every consuming stage shares: presence,
// groups, fanout, pusher and the gateway's deliver consumers declare what
// they read and how they apply a batch; the runner owns everything around
// that — checking the stage's collaborators, topic set-up, the consumer
// group, decoding and key checks, dead letters, metrics (at 0 from the
// start), retries and commits (through kafkax.Consume: a batch is committed
// only after apply returned nil, and retried with back-off, counted and
// reported as stalled, until it does).
//
// A stage is its declaration plus apply:
//
//	core, err := stage.Declare(&env, stage.Declaration{Name: "groups",
//		Needs: []stage.Need{{Name: "Store", OK: st != nil}},
//		Input: stage.Input{Group: cfg.Group, Topics: []string{topic}, Kind: schemas.KindGroup, MaxBatch: cfg.BatchSize}})
//	…
//	return stage.Run(ctx, core, apply) // in the stage's Run
//
// where apply gets the batch's valid events, in order, and returns the
// records it rejects itself (they go to the dead-letter topic with the
// records that failed decoding) or an error to retry the batch.
package stage

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/imstream/imstream/internal/plumbing/config"
	"github.com/imstream/imstream/internal/plumbing/kafkax"
	"github.com/imstream/imstream/internal/plumbing/obs"
	"github.com/imstream/imstream/schemas"
)

// Env is what every stage gets from the process: the plumbing and the
// sections every stage shares (kafka: topics and producer settings;
// consumer; schemas). A stage takes its own config section and its
// collaborators (stores, sinks) beside it, never another stage.
type Env struct {
	Conn       *kafkax.Conn
	Kafka      config.Kafka
	Consumer   config.Consumer
	Schemas    config.Schemas
	Metrics    *obs.Metrics
	Registerer prometheus.Registerer
	Logger     *slog.Logger // default slog.Default()
}

// NewEnv takes the shared sections from cfg.
func NewEnv(cfg config.Config, conn *kafkax.Conn, m *obs.Metrics, reg prometheus.Registerer, log *slog.Logger) Env {
	return Env{Conn: conn, Kafka: cfg.Kafka, Consumer: cfg.Consumer, Schemas: cfg.Schemas, Metrics: m, Registerer: reg, Logger: log}
}

// Check reports, for stage name, the missing parts of env and of the
// stage's own collaborators (need: a name for each, in order, and whether
// it is present), and fills in the default logger.
func (e *Env) Check(name string, need ...Need) error {
	need = append([]Need{{"Conn", e.Conn != nil}, {"Metrics", e.Metrics != nil}, {"Registerer", e.Registerer != nil}}, need...)
	var missing []string
	for _, n := range need {
		if !n.OK {
			missing = append(missing, n.Name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%s: missing %s", name, strings.Join(missing, ", "))
	}
	if e.Logger == nil {
		e.Logger = slog.Default()
	}
	return nil
}

// Need is one required collaborator for Check.
type Need struct {
	Name string
	OK   bool
}

// Register registers a stage's own collectors.
func (e Env) Register(cs ...prometheus.Collector) error {
	for _, c := range cs {
		if err := e.Registerer.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// The runner's types, so that a stage's apply needs only this package.
type (
	// Batch is one partition's batch as the consume loop hands it over.
	Batch = kafkax.Batch
)

// Core is a stage's shared parts: one per stage and process, however many
// inputs it consumes.
type Core struct {
	env  Env
	name string
	log  *slog.Logger
	dlq  *kafkax.DeadLetter
	dec  Decoder
	in   Input // the declared input (Declare)
}

// newCore builds the stage's decoder and dead-letter writer and exports its
// metric families at 0.
func newCore(env Env, name string) *Core {
	if env.Logger == nil {
		env.Logger = slog.Default()
	}
	return &Core{env: env, name: name, log: env.Logger.With("stage", name),
		dlq: newDeadLetter(env.Metrics, env.Conn, env.Kafka, name),
		dec: newDecoder(env.Metrics, name, env.Schemas, env.Kafka.MaxRecordBytes)}
}

// Declaration is what a stage tells the runner about itself.
type Declaration struct {
	Name  string // in metrics, logs and dead-letter headers
	Needs []Need // its own collaborators (stores, sinks), checked by Declare
	// Input is what Run consumes; zero for a stage that consumes only
	// through Consume (the gateway's per-connection deliver consumers).
	Input Input
}

// Declare checks env and the stage's collaborators (filling in the default
// logger), and builds the stage's Core, with its metric families at 0 —
// records consumed from its input topics among them.
func Declare(env *Env, d Declaration) (*Core, error) {
	if err := env.Check(d.Name, d.Needs...); err != nil {
		return nil, err
	}
	c := newCore(*env, d.Name)
	c.in = d.Input
	if len(d.Input.Topics) > 0 {
		env.Metrics.Known(env.Metrics.Consumed, d.Name, d.Input.Topics...)
	}
	return c, nil
}

// Run consumes the declared input with apply until ctx ends — its topics
// (and Input.Create) set up first, MaxWait 100 ms unless declared — then
// releases the core.
func Run[T schemas.Event](ctx context.Context, c *Core, apply Apply[T]) error {
	return RunRaw(ctx, c, decoding(c, c.in.Kind, apply))
}

// RunRaw is Run for a stage that decodes its records itself (Decode):
// apply gets each batch as read.
func RunRaw(ctx context.Context, c *Core, apply RawApply) error {
	defer c.Close()
	in := c.in
	in.Prepare = true
	if in.MaxWait <= 0 {
		in.MaxWait = defaultMaxWait
	}
	return ConsumeRaw(ctx, c, in, apply)
}

// defaultMaxWait is the longest a declared input spends filling a batch
// while records keep arriving.
const defaultMaxWait = 100 * time.Millisecond

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
	// QueueSize, when > 0, is the records buffered per partition instead
	// of consumer.queue_size (a consumer paced by something else than its
	// input, such as a quota, need not read ahead of it).
	QueueSize int
	Log       *slog.Logger // default the stage's
	// Transient marks a consumer that lives for a connection (the
	// gateway's deliver consumers): when it ends, its topics' series are
	// deleted, so servers that are gone leave no metrics behind.
	Transient bool
}

// Apply handles one batch: the valid events of one partition, in order.
// It returns records it rejects itself (dead-lettered with the batch's
// invalid ones, after it succeeded) or an error to retry the whole batch.
type Apply[T schemas.Event] func(ctx context.Context, b Batch, evs []Decoded[T]) ([]Rejected, error)

// RawApply handles one batch of records as read, decoding what it needs
// with Decode; it returns the records to dead-letter, or an error to retry
// the whole batch.
type RawApply func(ctx context.Context, b Batch) ([]Rejected, error)

// Decode validates the records whose skip entry is false (skip nil: all)
// as events of the core's declared kind, with the stage's checks
// (DecodeSome).
func Decode[T schemas.Event](c *Core, records []kafka.Message, skip []bool) ([]Decoded[T], []Rejected) {
	return DecodeSome[T](records, c.dec, c.in.Kind, skip)
}

// Consume runs in's consumer group until ctx ends.
func Consume[T schemas.Event](ctx context.Context, c *Core, in Input, apply Apply[T]) error {
	return ConsumeRaw(ctx, c, in, decoding(c, in.Kind, apply))
}

// decoding is apply behind the decoding of every record as kind: the
// invalid ones are dead-lettered with what apply rejects.
func decoding[T schemas.Event](c *Core, kind schemas.Kind, apply Apply[T]) RawApply {
	return func(ctx context.Context, b Batch) ([]Rejected, error) {
		decoded, rejected := DecodeBatch[T](b.Records, c.dec, kind)
		more, err := apply(ctx, b, decoded)
		if err != nil {
			return nil, err
		}
		return append(rejected, more...), nil
	}
}

// ConsumeRaw is Consume with an apply that decodes for itself.
func ConsumeRaw(ctx context.Context, c *Core, in Input, apply RawApply) error {
	e := c.env
	if in.Prepare {
		if err := PrepareTopics(ctx, e.Conn, e.Kafka, append(in.Topics[:len(in.Topics):len(in.Topics)], in.Create...)...); err != nil {
			return err
		}
	}
	log := in.Log
	if log == nil {
		log = c.log
	}
	h := kafkax.HandlerFunc(func(ctx context.Context, b kafkax.Batch) error {
		rejected, err := apply(ctx, b)
		if err != nil {
			return err
		}
		return c.dlq.Send(ctx, rejected)
	})
	cc := e.Consumer
	if in.QueueSize > 0 {
		cc.QueueSize = in.QueueSize
	}
	err := e.Conn.Consume(ctx, consumerConfig(cc, in.Group, in.Topics, in.MaxBatch, in.MaxWait, log, hooks(e.Metrics, c.name)), h)
	if in.Transient {
		forget(e.Metrics, c.name, in.Topics)
	}
	return err
}

// Events returns the events of decoded, in order.
func Events[T schemas.Event](decoded []Decoded[T]) []T {
	out := make([]T, len(decoded))
	for i, d := range decoded {
		out[i] = d.Event
	}
	return out
}
