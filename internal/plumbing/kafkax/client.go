// Package kafkax is imstream's Kafka plumbing over segmentio/kafka-go: a
// producer with safe defaults (murmur2 partitioning, acks=all, a short
// linger), topic creation, a dead-letter writer, and the consume loop every
// stage runs (one worker per assigned partition, adaptive batches, retry
// with back-off, commit only after the handler succeeded).
package kafkax

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"

	"github.com/imstream/imstream/internal/plumbing/config"
)

// Conn holds what every Kafka client of a process shares: broker addresses
// and how to reach them (dialer for readers and groups, transport for
// writers and admin calls).
type Conn struct {
	Brokers   []string
	ClientID  string
	Dialer    *kafka.Dialer
	Transport *kafka.Transport

	writers kafka.RoundTripper // Transport behind the writers' metadata cache
}

// NewConn builds the connection settings from config, with TLS and SASL
// when configured. It fails only on unreadable TLS files (Validate checks
// them first).
func NewConn(cfg config.Kafka) (*Conn, error) {
	tlsCfg, err := cfg.TLS.Config()
	if err != nil {
		return nil, fmt.Errorf("kafka.tls: %w", err)
	}
	mech, err := saslMechanism(cfg.SASL)
	if err != nil {
		return nil, err
	}
	transport := &kafka.Transport{ClientID: cfg.ClientID, DialTimeout: 5 * time.Second, IdleTimeout: 30 * time.Second,
		TLS: tlsCfg, SASL: mech}
	return &Conn{
		Brokers:  cfg.Brokers,
		ClientID: cfg.ClientID,
		Dialer: &kafka.Dialer{ClientID: cfg.ClientID, Timeout: 10 * time.Second, DualStack: true,
			TLS: tlsCfg, SASLMechanism: mech},
		Transport: transport,
		writers:   newMetadataCache(transport, time.Second),
	}, nil
}

// MustConn is NewConn for configurations already validated.
func MustConn(cfg config.Kafka) *Conn {
	c, err := NewConn(cfg)
	if err != nil {
		panic(err)
	}
	return c
}

func saslMechanism(s config.SASL) (sasl.Mechanism, error) {
	switch s.Mechanism {
	case "":
		return nil, nil
	case "PLAIN":
		return plain.Mechanism{Username: s.Username, Password: s.Password}, nil
	case "SCRAM-SHA-256", "SCRAM-SHA-512":
		algo := scram.SHA256
		if s.Mechanism == "SCRAM-SHA-512" {
			algo = scram.SHA512
		}
		m, err := scram.Mechanism(algo, s.Username, s.Password)
		if err != nil {
			return nil, fmt.Errorf("kafka.sasl: %w", err)
		}
		return m, nil
	}
	return nil, fmt.Errorf("kafka.sasl.mechanism %q is not supported", s.Mechanism)
}

// Client returns an admin client.
func (c *Conn) Client() *kafka.Client {
	cl := &kafka.Client{Addr: kafka.TCP(c.Brokers...), Timeout: 10 * time.Second}
	if c.Transport != nil { // a typed nil would crash kafka-go
		cl.Transport = c.Transport
	}
	return cl
}

// EnsureTopics creates the topics that do not exist yet, with the given
// partition counts. Topics that exist are left as they are.
func (c *Conn) EnsureTopics(ctx context.Context, replication int, topics map[string]int) error {
	_, err := c.CreateTopics(ctx, replication, topics)
	return err
}

// CreateTopics is EnsureTopics that also returns the topics it created
// (sorted), leaving out those that existed.
func (c *Conn) CreateTopics(ctx context.Context, replication int, topics map[string]int) ([]string, error) {
	if len(topics) == 0 {
		return nil, nil
	}
	req := &kafka.CreateTopicsRequest{}
	for name, parts := range topics {
		req.Topics = append(req.Topics, kafka.TopicConfig{Topic: name, NumPartitions: parts, ReplicationFactor: replication})
	}
	resp, err := c.Client().CreateTopics(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("kafka: create topics: %w", err)
	}
	var created []string
	for name, err := range resp.Errors {
		switch {
		case err == nil:
			created = append(created, name)
		case !errors.Is(err, kafka.TopicAlreadyExists):
			return nil, fmt.Errorf("kafka: create topic %s: %w", name, err)
		}
	}
	slices.Sort(created)
	return created, nil
}

// WaitReady blocks until a broker answers a metadata request or ctx ends.
func (c *Conn) WaitReady(ctx context.Context) error {
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := c.Client().Metadata(cctx, &kafka.MetadataRequest{})
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kafka: brokers %v not reachable: %w", c.Brokers, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Partitions returns the number of partitions of topic.
func (c *Conn) Partitions(ctx context.Context, topic string) (int, error) {
	var n int
	err := c.fresh(func(cl *kafka.Client) (err error) {
		n, err = partitions(ctx, cl, topic)
		return err
	})
	return n, err
}

func partitions(ctx context.Context, cl *kafka.Client, topic string) (int, error) {
	resp, err := cl.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return 0, fmt.Errorf("kafka: metadata %s: %w", topic, err)
	}
	for _, t := range resp.Topics {
		if t.Name == topic {
			if t.Error != nil {
				return 0, fmt.Errorf("kafka: metadata %s: %w", topic, t.Error)
			}
			return len(t.Partitions), nil
		}
	}
	return 0, fmt.Errorf("kafka: metadata %s: %w", topic, kafka.UnknownTopicOrPartition)
}

// fresh runs call with the shared client and, when it reports a topic
// unknown, once more with a client of its own transport. The shared
// transport answers metadata (and places requests) from a cache it
// refreshes every few seconds: a topic created since by another process
// (a role started before the roles that create its topics) would be
// unknown to it until then, and its partitions, offsets and lag
// unreadable. A topic really missing costs one extra connection.
func (c *Conn) fresh(call func(*kafka.Client) error) error {
	err := call(c.Client())
	if !errors.Is(err, kafka.UnknownTopicOrPartition) || c.Transport == nil {
		return err
	}
	t := &kafka.Transport{ClientID: c.Transport.ClientID, DialTimeout: c.Transport.DialTimeout,
		IdleTimeout: c.Transport.IdleTimeout, TLS: c.Transport.TLS, SASL: c.Transport.SASL}
	defer t.CloseIdleConnections()
	return call(&kafka.Client{Addr: kafka.TCP(c.Brokers...), Timeout: 10 * time.Second, Transport: t})
}

// Probe asks the brokers for their metadata over a new connection: it
// succeeds when one of them answers. (The writers' transport answers
// metadata from its cache; a readiness check must not.)
func (c *Conn) Probe(ctx context.Context) error {
	var err error
	for _, b := range c.Brokers {
		var conn *kafka.Conn
		if conn, err = c.Dialer.DialContext(ctx, "tcp", b); err != nil {
			continue
		}
		if dl, ok := ctx.Deadline(); ok {
			_ = conn.SetDeadline(dl)
		}
		_, err = conn.Brokers()
		conn.Close()
		if err == nil {
			return nil
		}
	}
	return err
}

// IsTemporary reports whether a Kafka error is worth retrying.
func IsTemporary(err error) bool {
	var ke kafka.Error
	if errors.As(err, &ke) {
		return ke.Temporary()
	}
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, kafka.ErrGroupClosed)
}
