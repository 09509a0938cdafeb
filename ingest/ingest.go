// Package ingest is the producer library an IM server embeds to feed
// imstream: presence (Subscribe, Unsubscribe, SubscribeRoom,
// UnsubscribeRoom, and the server lifecycle ServerUp, Heartbeat, ServerDown
// with a built-in heartbeat loop) and messages (Publish, PublishGroup,
// PublishRoom, Push).
//
// Records are v1 JSON (package schemas), keyed as docs/protocol.md §1 says and
// partitioned with the Java-compatible murmur2 partitioner, so producers in
// other languages put the same key on the same partition. Every call blocks
// until the brokers acknowledged the record (acks=all) and returns the
// error otherwise; concurrent calls share produce batches, and a lone call
// waits at most Config.Linger for company. A Producer is safe for
// concurrent use.
package ingest

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/imstream/imstream/internal/plumbing/config"
	"github.com/imstream/imstream/internal/plumbing/kafkax"
	"github.com/imstream/imstream/internal/plumbing/tick"
	"github.com/imstream/imstream/schemas"
)

// Config configures a Producer.
type Config struct {
	Brokers []string // required
	Server  string   // required: this IM server's id, [A-Za-z0-9._-]{1,64}
	// Epoch identifies this start of the server; a new epoch voids the
	// presence state of older ones. Default: the start time in unix ms.
	Epoch int64

	PresenceTopic string // default imr.presence
	PublishTopic  string // default imr.publish: the online lane
	// BulkTopic is the bulk lane: Push events go there, so that online
	// messages never queue behind offline-push bursts (their own writer,
	// batches and topic). Default imr.publish.bulk; set it to PublishTopic
	// for one lane (an imstream that predates lanes).
	BulkTopic string

	// CreateTopics creates missing topics with Partitions partitions when
	// the producer starts (default false: the brokers' auto-creation or an
	// operator's `imstream topics` does it).
	CreateTopics bool
	Partitions   int // default 12

	Linger            time.Duration    // default 2ms: longest wait for a batch to fill
	HeartbeatInterval time.Duration    // default 5s
	WriteTimeout      time.Duration    // default 10s: longest wait for one record's acknowledgement; a write not answered by then resets the connections
	TopicWait         time.Duration    // default 60s: how long a call waits for a topic the brokers do not know yet (the roles create theirs when they start, maybe after this IM server), as the Java producer's max.block.ms
	Transport         *kafka.Transport // optional: TLS/SASL settings

	// OnHeartbeatError is called when the background heartbeat fails; nil
	// ignores it (the next beat retries).
	OnHeartbeatError func(error)
}

// Producer produces imstream events for one IM server.
type Producer struct {
	cfg    Config
	enc    *Encoder
	online *lane // presence and publish events
	bulk   *lane // push events
	mu     sync.Mutex
	stopHB context.CancelFunc
	hbDone chan struct{}
}

// lane is one writer on connections of its own, replaced when a write hangs.
type lane struct {
	mu sync.Mutex
	w  *kafka.Writer
}

func (l *lane) writer() *kafka.Writer {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w
}

// replace swaps w for a fresh writer unless another caller already did.
func (l *lane) replace(w *kafka.Writer, fresh func() *kafka.Writer) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.w == w {
		l.w = fresh()
		go w.Close() // may wait for the stuck request; nothing waits for it
	}
}

// New returns a producer. It does not contact the brokers unless
// cfg.CreateTopics is set.
func New(ctx context.Context, cfg Config) (*Producer, error) {
	if len(cfg.Brokers) == 0 {
		return nil, errors.New("ingest: Brokers is required")
	}
	if !schemas.ValidServerID(cfg.Server) {
		return nil, fmt.Errorf("ingest: Server %q must match [A-Za-z0-9._-]{1,64}", cfg.Server)
	}
	if cfg.Epoch == 0 {
		cfg.Epoch = time.Now().UnixMilli()
	}
	if cfg.PresenceTopic == "" {
		cfg.PresenceTopic = "imr.presence"
	}
	if cfg.PublishTopic == "" {
		cfg.PublishTopic = "imr.publish"
	}
	if cfg.BulkTopic == "" {
		cfg.BulkTopic = "imr.publish.bulk"
	}
	if cfg.Partitions == 0 {
		cfg.Partitions = 12
	}
	if cfg.Linger <= 0 {
		cfg.Linger = 2 * time.Millisecond
	}
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = 5 * time.Second
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 10 * time.Second
	}
	if cfg.TopicWait <= 0 {
		cfg.TopicWait = 60 * time.Second
	}
	p := &Producer{cfg: cfg, enc: NewEncoder(cfg.Server, cfg.Epoch,
		Topics{Presence: cfg.PresenceTopic, Publish: cfg.PublishTopic, Bulk: cfg.BulkTopic})}
	p.online = &lane{w: p.newWriter()}
	p.bulk = &lane{w: p.newWriter()}
	if cfg.CreateTopics {
		if err := p.createTopics(ctx); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// Epoch returns this producer's epoch.
func (p *Producer) Epoch() int64 { return p.cfg.Epoch }

// Server returns this producer's server id.
func (p *Producer) Server() string { return p.cfg.Server }

func (p *Producer) createTopics(ctx context.Context) error {
	conn := &kafkax.Conn{Brokers: p.cfg.Brokers, Transport: p.cfg.Transport}
	topics := map[string]int{p.cfg.PresenceTopic: p.cfg.Partitions, p.cfg.PublishTopic: p.cfg.Partitions, p.cfg.BulkTopic: p.cfg.Partitions}
	if err := conn.EnsureTopics(ctx, 1, topics); err != nil {
		return fmt.Errorf("ingest: %w", err)
	}
	return nil
}

// newWriter returns a writer on its own connections.
func (p *Producer) newWriter() *kafka.Writer {
	return &kafka.Writer{
		Addr:         kafka.TCP(p.cfg.Brokers...),
		Balancer:     &kafka.Murmur2Balancer{Consistent: true},
		RequiredAcks: kafka.RequireAll,
		BatchTimeout: p.cfg.Linger,
		BatchSize:    1000,
		WriteTimeout: p.cfg.WriteTimeout,
		MaxAttempts:  5,
		Transport:    p.newTransport(),
	}
}

// newTransport returns a transport with the configured settings and no
// connections yet (kafka-go's default transport is shared by the whole
// process, so a connection it holds cannot be dropped for one producer).
func (p *Producer) newTransport() *kafka.Transport {
	t := p.cfg.Transport
	if t == nil {
		t = &kafka.Transport{}
	}
	return &kafka.Transport{Dial: t.Dial, DialTimeout: t.DialTimeout, IdleTimeout: t.IdleTimeout, MetadataTTL: t.MetadataTTL,
		MetadataTopics: t.MetadataTopics, ClientID: t.ClientID, TLS: t.TLS, SASL: t.SASL, Resolver: t.Resolver, Context: t.Context}
}

// send produces one record and waits for the brokers' acknowledgement, at
// most WriteTimeout. A write that is not answered by then — a broker that
// went away without closing its connections, a half-open TCP connection —
// resets the producer's connections, so the next call starts afresh instead
// of queueing behind the stuck request. A topic the brokers do not know
// yet is waited for, up to TopicWait (kafka-go's writer gives up on it at
// once).
func (p *Producer) send(ctx context.Context, r Record) error {
	l := p.online
	if (config.Topics{Publish: p.cfg.PublishTopic, Bulk: p.cfg.BulkTopic}).IsBulkLane(r.Topic) {
		l = p.bulk
	}
	deadline := time.Now().Add(p.cfg.TopicWait)
	wait := tick.Backoff{Min: 50 * time.Millisecond, Max: time.Second}
	for {
		err := p.write(ctx, l, r)
		if !errors.Is(err, kafka.UnknownTopicOrPartition) {
			return err
		}
		if !time.Now().Before(deadline) {
			return fmt.Errorf("ingest: produce to %s: topic still unknown after %s (is imstream running, or the topic created?): %w", r.Topic, p.cfg.TopicWait, err)
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(min(wait.Next(), time.Until(deadline))):
		}
	}
}

// write is one attempt of send.
func (p *Producer) write(ctx context.Context, l *lane, r Record) error {
	wctx, cancel := context.WithTimeout(ctx, p.cfg.WriteTimeout)
	defer cancel()
	w := l.writer()
	err := w.WriteMessages(wctx, r.Message())
	if err == nil {
		return nil
	}
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		l.replace(w, p.newWriter)
		err = fmt.Errorf("not acknowledged within %s (connections reset): %w", p.cfg.WriteTimeout, err)
	}
	return fmt.Errorf("ingest: produce to %s: %w", r.Topic, err)
}

// UserKey, RoomKey, GroupKey and ServerKey are the record keys of docs/protocol.md §1.
func UserKey(appid, uid int64) string {
	return strconv.FormatInt(appid, 10) + ":" + strconv.FormatInt(uid, 10)
}

// RoomKey is the key of room events and room messages.
func RoomKey(appid, room int64) string {
	return strconv.FormatInt(appid, 10) + ":room:" + strconv.FormatInt(room, 10)
}

// GroupKey is the key of group messages.
func GroupKey(appid, group int64) string {
	return strconv.FormatInt(appid, 10) + ":group:" + strconv.FormatInt(group, 10)
}

// BroadcastKey is the key of an app's broadcasts.
func BroadcastKey(appid int64) string { return strconv.FormatInt(appid, 10) + ":broadcast" }

// ServerKey is the key of server lifecycle events.
func ServerKey(server string) string { return "server:" + server }
