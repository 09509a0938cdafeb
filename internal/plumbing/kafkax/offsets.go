package kafkax

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"
)

// Offsets returns the first and end (high watermark) offset of every
// partition of topic.
func (c *Conn) Offsets(ctx context.Context, topic string) (first, end map[int]int64, err error) {
	err = c.fresh(func(cl *kafka.Client) (err error) {
		first, end, err = offsets(ctx, cl, topic)
		return err
	})
	return first, end, err
}

func offsets(ctx context.Context, cl *kafka.Client, topic string) (first, end map[int]int64, err error) {
	n, err := partitions(ctx, cl, topic)
	if err != nil {
		return nil, nil, err
	}
	req := map[string][]kafka.OffsetRequest{}
	for p := 0; p < n; p++ {
		req[topic] = append(req[topic], kafka.FirstOffsetOf(p), kafka.LastOffsetOf(p))
	}
	resp, err := cl.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: req})
	if err != nil {
		return nil, nil, fmt.Errorf("kafka: list offsets %s: %w", topic, err)
	}
	first, end = map[int]int64{}, map[int]int64{}
	for _, po := range resp.Topics[topic] {
		if po.Error != nil {
			return nil, nil, fmt.Errorf("kafka: list offsets %s/%d: %w", topic, po.Partition, po.Error)
		}
		first[po.Partition], end[po.Partition] = po.FirstOffset, po.LastOffset
	}
	return first, end, nil
}

// Committed returns the offsets group committed for the partitions of
// topic (-1 where it has none).
func (c *Conn) Committed(ctx context.Context, group, topic string, partitions []int) (map[int]int64, error) {
	ps, err := c.committed(ctx, group, topic, partitions)
	if err != nil {
		return nil, err
	}
	out := make(map[int]int64, len(ps))
	for p, po := range ps {
		out[p] = po.CommittedOffset
	}
	return out, nil
}

// committed returns what group committed for the partitions of topic:
// offset and metadata, by partition.
func (c *Conn) committed(ctx context.Context, group, topic string, partitions []int) (map[int]kafka.OffsetFetchPartition, error) {
	resp, err := c.Client().OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: partitions}})
	if err == nil {
		err = resp.Error
	}
	if errors.Is(err, kafka.GroupIdNotFound) {
		// A group that never joined has committed nothing (Kafka answers
		// -1 offsets; some brokers this error).
		return map[int]kafka.OffsetFetchPartition{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("kafka: committed offsets of %s on %s: %w", group, topic, err)
	}
	out := map[int]kafka.OffsetFetchPartition{}
	for _, po := range resp.Topics[topic] {
		if po.Error != nil {
			return nil, fmt.Errorf("kafka: committed offsets of %s on %s/%d: %w", group, topic, po.Partition, po.Error)
		}
		out[po.Partition] = po
	}
	return out, nil
}

// Lag returns, per partition of topic, how many records group has not
// committed yet: end offset minus committed offset (minus the first offset
// when the group has committed nothing). It asks the broker, so it is right
// even when the group's consumers are stuck or gone.
func (c *Conn) Lag(ctx context.Context, group, topic string) (map[int]int64, error) {
	first, end, err := c.Offsets(ctx, topic)
	if err != nil {
		return nil, err
	}
	parts := make([]int, 0, len(end))
	for p := range end {
		parts = append(parts, p)
	}
	committed, err := c.Committed(ctx, group, topic, parts)
	if err != nil {
		return nil, err
	}
	lag := make(map[int]int64, len(end))
	for p, e := range end {
		from, ok := committed[p]
		if !ok || from < first[p] {
			from = first[p]
		}
		lag[p] = max(e-from, 0)
	}
	return lag, nil
}

// OffsetsAt returns, for partition p of topic, the first offset of a
// record written at or after t (an offsets-by-time lookup; -1 or the end
// when there is none) and the end offset, asking p's leader; within ctx's
// deadline, else 10 s.
func (c *Conn) OffsetsAt(ctx context.Context, topic string, p int, t time.Time) (at, end int64, err error) {
	conn, err := c.Dialer.DialLeader(ctx, "tcp", c.Brokers[0], topic, p)
	if err != nil {
		return 0, 0, err
	}
	defer conn.Close()
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(10 * time.Second)
	}
	_ = conn.SetDeadline(deadline)
	at, err1 := conn.ReadOffset(t)
	end, err2 := conn.ReadLastOffset()
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("offsets of %s/%d: %v %v", topic, p, err1, err2)
	}
	return at, end, nil
}

// ReadRange calls fn for the records of partition p of topic from offset
// from up to end, in order, until fn returns false. It joins no consumer
// group and commits nothing; a record that does not arrive within stall is
// an error, a *Stalled that says how far the read came. It fetches 1 MiB
// at a time (a record larger than that still comes whole: brokers return
// at least one batch): a busy or slow broker
// answered 16 MiB fetches too late for kafka-go's fetch deadline, and the
// read never started.
func (c *Conn) ReadRange(ctx context.Context, topic string, p int, from, end int64, stall time.Duration, fn func(kafka.Message) bool) error {
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: c.Brokers, Dialer: c.Dialer, Topic: topic, Partition: p, MaxBytes: 1 << 20, MaxWait: 50 * time.Millisecond})
	defer r.Close()
	if err := r.SetOffset(from); err != nil {
		return err
	}
	for next := from; next < end; {
		rctx, cancel := context.WithTimeout(ctx, stall)
		m, err := r.ReadMessage(rctx)
		stalled := rctx.Err() != nil && ctx.Err() == nil
		cancel()
		if err != nil && stalled {
			return &Stalled{Topic: topic, Partition: p, From: from, Next: next, End: end, After: stall}
		}
		if err != nil {
			return fmt.Errorf("read %s/%d at %d: %w", topic, p, next, err)
		}
		next = m.Offset + 1
		if !fn(m) {
			return nil
		}
	}
	return nil
}

// Stalled is a ReadRange that gave up: no record arrived within After. It
// read [From, Next) of [From, End).
type Stalled struct {
	Topic           string
	Partition       int
	From, Next, End int64
	After           time.Duration
}

func (e *Stalled) Error() string {
	return fmt.Sprintf("read %s/%d: no record within %s at offset %d (read %d of %d records, [%d, %d))",
		e.Topic, e.Partition, e.After, e.Next, e.Next-e.From, e.End-e.From, e.From, e.End)
}
