package fanout

import (
	"encoding/binary"
	"encoding/hex"
	"hash/fnv"

	"github.com/segmentio/kafka-go"

	"github.com/imstream/imstream/schemas"
)

// HeaderTraceparent is the W3C trace context header, carried from an input
// record to every deliver record and push_job record derived from it.
const HeaderTraceparent = "traceparent"

// traceHeaders are the trace headers of the outputs of the event read
// from m (read at incarnation inc): the producer's traceparent when it set
// one, else (derive) one derived from the event's id (or, without one, its
// source coordinates), so that the outputs of one event share a trace id
// that tools can join with their own spans.
func traceHeaders(m *kafka.Message, ev *schemas.Publish, inc string, derive bool) []kafka.Header {
	for _, h := range m.Headers {
		if h.Key == HeaderTraceparent {
			return []kafka.Header{h}
		}
	}
	if !derive {
		return nil
	}
	if ev.ID != "" {
		return []kafka.Header{{Key: HeaderTraceparent, Value: DerivedTraceparent(ev.ID, "", 0, 0)}}
	}
	return []kafka.Header{{Key: HeaderTraceparent, Value: DerivedTraceparent(m.Topic, inc, m.Partition, m.Offset)}}
}

// DerivedTraceparent is the traceparent imstream gives an event whose
// producer set none, from its id (id alone) or its source coordinates
// (topic, inc, partition, offset): version 00, a trace id of two FNV-1a
// hashes, a span id of a third, flags 01 (sampled).
func DerivedTraceparent(id, inc string, partition int, offset int64) []byte {
	h := func(seed byte) []byte {
		f := fnv.New64a()
		f.Write([]byte{seed})
		f.Write([]byte(id))
		f.Write([]byte(inc))
		f.Write(binary.LittleEndian.AppendUint64(binary.LittleEndian.AppendUint64(make([]byte, 0, 16), uint64(partition)), uint64(offset)))
		return f.Sum(nil) // big-endian
	}
	b := make([]byte, 0, 55)
	b = append(b, "00-"...)
	b = hex.AppendEncode(b, h(1))
	b = hex.AppendEncode(b, h(2))
	b = append(b, '-')
	b = hex.AppendEncode(b, h(3))
	return append(b, "-01"...)
}
