package fanout

import (
	"strconv"

	"github.com/segmentio/kafka-go"

	"github.com/imstream/imstream/internal/plumbing/stage"
	"github.com/imstream/imstream/schemas"
)

// withSource returns the event's JSON with src appended, keeping every byte
// the producer wrote (unknown fields, msg.raw).
func withSource(value []byte, topic string, partition int, offset int64, inc string) []byte {
	end := len(value) - 1
	for end >= 0 && value[end] != '}' {
		end--
	}
	b := make([]byte, 0, end+96+len(topic)+len(inc))
	b = append(b, value[:end]...)
	b = append(b, `,"src":{"topic":`...)
	b = strconv.AppendQuote(b, topic)
	b = append(b, `,"partition":`...)
	b = strconv.AppendInt(b, int64(partition), 10)
	b = append(b, `,"offset":`...)
	b = strconv.AppendInt(b, offset, 10)
	if inc != "" {
		b = append(b, `,"inc":`...)
		b = strconv.AppendQuote(b, inc)
	}
	return append(b, "}}"...)
}

// deliverRecord is the deliver record of the event read from m: its JSON
// with src. Deliveries are read by IM servers, so they are JSON whatever
// the input's format; a JSON input is kept as the producer wrote it.
func deliverRecord(ev *schemas.Publish, m *kafka.Message, inc string) []byte {
	if stage.Format(m) == "" {
		return withSource(m.Value, m.Topic, m.Partition, m.Offset, inc)
	}
	d := *ev
	d.Src = &schemas.Source{Topic: m.Topic, Partition: m.Partition, Offset: m.Offset, Inc: inc}
	return d.AppendJSON(make([]byte, 0, 2*len(m.Value)+256))
}
