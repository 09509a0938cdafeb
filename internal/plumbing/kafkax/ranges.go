package kafkax

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"
)

// PartitionReader reads ranges of one partition, outside any consumer
// group, over one connection to its leader (dialled again after a
// failure). Fair share's drainer reads held records back from their lane
// partition with it.
type PartitionReader struct {
	conn      *Conn
	topic     string
	partition int
	maxBytes  int
	c         *kafka.Conn
}

// NewPartitionReader returns a reader of partition p of topic that fetches
// up to maxBytes at a time.
func (c *Conn) NewPartitionReader(topic string, p, maxBytes int) *PartitionReader {
	return &PartitionReader{conn: c, topic: topic, partition: p, maxBytes: max(maxBytes, 1<<20)}
}

// Gone is a range read that found records no longer in the log: the
// partition's first records were deleted (retention) up to First, or its
// log started again (Restarted: the topic re-created, the broker's data
// lost) and holds other records there now.
type Gone struct {
	Topic     string
	Partition int
	From, To  int64
	First     int64 // the first offset held; with Restarted, meaningless
	Restarted bool
	Why       string
}

func (e *Gone) Error() string {
	if e.Restarted {
		return fmt.Sprintf("%s/%d [%d, %d]: the partition's log started again (%s): its records are gone", e.Topic, e.Partition, e.From, e.To, e.Why)
	}
	return fmt.Sprintf("%s/%d [%d, %d]: the log now starts at %d: %d records deleted before they were read", e.Topic, e.Partition, e.From, e.To, e.First, e.First-e.From)
}

// Read returns the records of [from, to] that keep accepts, in order. The
// record at to must have fingerprint fp (Fingerprint; "" to skip the
// check), or the log is taken as started again and nothing is returned. A
// range partly deleted by retention returns what is still held and a
// *Gone.
func (r *PartitionReader) Read(ctx context.Context, from, to int64, fp string, keep func(*kafka.Message) bool) ([]kafka.Message, error) {
	out, err := r.read(ctx, from, to, fp, keep)
	var gone *Gone
	if err != nil && !errors.As(err, &gone) && r.c != nil {
		r.c.Close() // a broken or moved connection: dial again next time
		r.c = nil
	}
	return out, err
}

func (r *PartitionReader) read(ctx context.Context, from, to int64, fp string, keep func(*kafka.Message) bool) ([]kafka.Message, error) {
	if r.c == nil {
		c, err := dialLeader(ctx, r.conn.Dialer, r.conn.Brokers, r.topic, r.partition)
		if err != nil {
			return nil, fmt.Errorf("read %s/%d: %w", r.topic, r.partition, err)
		}
		r.c = c
	}
	stop := context.AfterFunc(ctx, func() { r.c.SetDeadline(time.Now()) })
	defer stop()
	r.c.SetDeadline(time.Now().Add(fetchSafety))
	first, end, err := r.c.ReadOffsets()
	if err != nil {
		return nil, fmt.Errorf("read %s/%d: offsets: %w", r.topic, r.partition, err)
	}
	switch {
	case to >= end:
		return nil, &Gone{Topic: r.topic, Partition: r.partition, From: from, To: to, Restarted: true, Why: fmt.Sprintf("it ends at %d", end)}
	case to < first:
		return nil, &Gone{Topic: r.topic, Partition: r.partition, From: from, To: to, First: first}
	}
	var gone error
	if from < first {
		gone = &Gone{Topic: r.topic, Partition: r.partition, From: from, To: to, First: first}
		from = first
	}
	if _, err := r.c.Seek(from, kafka.SeekAbsolute|kafka.SeekDontCheck); err != nil {
		return nil, fmt.Errorf("read %s/%d: seek %d: %w", r.topic, r.partition, from, err)
	}
	var out []kafka.Message
	for next := from; next <= to; {
		r.c.SetDeadline(time.Now().Add(fetchSafety))
		batch := r.c.ReadBatchWith(kafka.ReadBatchConfig{MinBytes: 1, MaxBytes: r.maxBytes, MaxWait: 250 * time.Millisecond})
		for next <= to {
			m, err := batch.ReadMessage()
			if err != nil {
				break
			}
			next = m.Offset + 1
			if m.Offset > to {
				break
			}
			if m.Offset == to && fp != "" && Fingerprint(&m) != fp {
				batch.Close()
				return nil, &Gone{Topic: r.topic, Partition: r.partition, From: from, To: to, Restarted: true,
					Why: fmt.Sprintf("offset %d holds another record than the one held back", to)}
			}
			if keep(&m) {
				out = append(out, m)
			}
		}
		err := batch.Close()
		if o, _ := r.c.Offset(); o > next {
			next = o // past records the log no longer shows (control batches)
		}
		if err != nil && !errors.Is(err, kafka.RequestTimedOut) {
			return nil, fmt.Errorf("read %s/%d at %d: %w", r.topic, r.partition, next, err)
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if _, err := r.c.Seek(next, kafka.SeekAbsolute|kafka.SeekDontCheck); err != nil {
			return nil, fmt.Errorf("read %s/%d: seek %d: %w", r.topic, r.partition, next, err)
		}
	}
	return out, gone
}

// Close closes the connection.
func (r *PartitionReader) Close() error {
	if r.c == nil {
		return nil
	}
	err := r.c.Close()
	r.c = nil
	return err
}
