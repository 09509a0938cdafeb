package kafkax

import (
	"context"
	"strconv"

	"github.com/segmentio/kafka-go"
)

// DeadLetter writes rejected records to the dead-letter topic, keyed as the
// original, with headers: reason (code: detail), stage, src_topic,
// src_partition, src_offset.
type DeadLetter struct {
	W     *kafka.Writer // its Topic is the dead-letter topic
	Stage string
	// OnReject is called once per rejected record with its reason code
	// (metrics hook); nil is allowed.
	OnReject func(reason string)
}

// Rejected is one record the stage refuses, and why.
type Rejected struct {
	Msg    kafka.Message
	Code   string // short reason code, e.g. "invalid_json"
	Reason string // human-readable, names the field
}

// Send writes the rejected records; it returns only when the broker has
// them (or ctx ended), so the caller may then commit past them.
func (d *DeadLetter) Send(ctx context.Context, rs []Rejected) error {
	if len(rs) == 0 {
		return nil
	}
	msgs := make([]kafka.Message, len(rs))
	for i, r := range rs {
		msgs[i] = kafka.Message{
			Key:   r.Msg.Key,
			Value: r.Msg.Value,
			Headers: []kafka.Header{
				{Key: "reason", Value: []byte(r.Code + ": " + r.Reason)},
				{Key: "stage", Value: []byte(d.Stage)},
				{Key: "src_topic", Value: []byte(r.Msg.Topic)},
				{Key: "src_partition", Value: []byte(strconv.Itoa(r.Msg.Partition))},
				{Key: "src_offset", Value: []byte(strconv.FormatInt(r.Msg.Offset, 10))},
			},
		}
	}
	if err := Write(ctx, d.W, msgs...); err != nil {
		return err
	}
	if d.OnReject != nil {
		for _, r := range rs {
			d.OnReject(r.Code)
		}
	}
	return nil
}
