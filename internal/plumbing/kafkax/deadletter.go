package kafkax

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
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
	// OnTruncate is called once per dead letter written truncated; nil is
	// allowed.
	OnTruncate func()
	// Ensure, when set, creates the dead-letter topic; Send calls it when
	// the topic has gone away (deleted, a cluster that lost its data).
	Ensure func(ctx context.Context) error
}

// Rejected is one record the stage refuses, and why.
type Rejected struct {
	Msg    kafka.Message
	Code   string // short reason code, e.g. "invalid_json"
	Reason string // human-readable, names the field
}

// TruncateAt is how much of a record's key and value a truncated dead
// letter keeps.
const TruncateAt = 4 << 10

// Send writes the rejected records; it returns only when the broker has
// them (or ctx ended), so the caller may then commit past them. A dead
// letter that does not fit the broker's or the writer's size limit (the
// headers make it larger than the record it carries) is written truncated:
// the first TruncateAt bytes of key and value, with headers truncated=true,
// original_size and sha256 of the whole value, so the record can still be
// found in its source partition. Size never blocks a partition.
func (d *DeadLetter) Send(ctx context.Context, rs []Rejected) error {
	if len(rs) == 0 {
		return nil
	}
	msgs := make([]kafka.Message, len(rs))
	for i, r := range rs {
		msgs[i] = d.letter(r, false)
	}
	err := d.write(ctx, msgs...)
	if err != nil && tooLarge(err) {
		err = nil
		for i, r := range rs { // one at a time: only the ones too large are cut
			if err = d.write(ctx, msgs[i]); err != nil && tooLarge(err) {
				err = d.write(ctx, d.letter(r, true))
				if err == nil && d.OnTruncate != nil {
					d.OnTruncate()
				}
			}
			if err != nil {
				break
			}
		}
	}
	if err != nil {
		return fmt.Errorf("dead letter: %w", err)
	}
	if d.OnReject != nil {
		for _, r := range rs {
			d.OnReject(r.Code)
		}
	}
	return nil
}

// write writes msgs; when the dead-letter topic has gone away (deleted, a
// cluster that lost its data) it creates it again through Ensure and
// writes once more.
func (d *DeadLetter) write(ctx context.Context, msgs ...kafka.Message) error {
	err := Write(ctx, d.W, msgs...)
	if err != nil && UnknownTopic(err) && d.Ensure != nil {
		if err = d.Ensure(ctx); err == nil {
			err = Write(ctx, d.W, msgs...)
		}
	}
	return err
}

// letter builds the dead letter of r, truncated or whole.
func (d *DeadLetter) letter(r Rejected, truncate bool) kafka.Message {
	m := kafka.Message{
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
	// The record's own headers follow: its format (a binary record is
	// unreadable without it) and whatever its producer set.
	m.Headers = append(m.Headers, r.Msg.Headers...)
	if truncate {
		sum := sha256.Sum256(r.Msg.Value)
		m.Key = m.Key[:min(len(m.Key), TruncateAt)]
		m.Value = m.Value[:min(len(m.Value), TruncateAt)]
		m.Headers = append(m.Headers,
			kafka.Header{Key: "truncated", Value: []byte("true")},
			kafka.Header{Key: "original_size", Value: []byte(strconv.Itoa(len(r.Msg.Value)))},
			kafka.Header{Key: "sha256", Value: []byte(hex.EncodeToString(sum[:]))})
	}
	return m
}

// tooLarge reports whether a write failed because a record is over the
// writer's or the broker's size limit.
func tooLarge(err error) bool {
	return anyWriteError(err, func(e error) bool {
		var mtl kafka.MessageTooLargeError
		return errors.Is(e, kafka.MessageSizeTooLarge) || errors.As(e, &mtl)
	})
}
