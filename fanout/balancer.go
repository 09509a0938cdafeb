package fanout

import (
	"strconv"
	"strings"

	"github.com/segmentio/kafka-go"

	"github.com/imstream/imstream/internal/plumbing/kafkax"
)

// OutputBalancer is where the fanout's outputs go, for every writer of
// them (the fanout, `imstream dlq redrive`): push jobs (key
// "<source topic>:<source partition>") on PushPartition, spill records on
// their SpillPartition (the event's key up to its first colon is its
// appid; the origin_partition header its source partition), everything
// else where murmur2 puts its key. SpillTopic "": no spill topic.
type OutputBalancer struct{ PushTopic, SpillTopic string }

// Balance implements kafka.Balancer.
func (o *OutputBalancer) Balance(msg kafka.Message, partitions ...int) int {
	if len(partitions) > 0 {
		k := string(msg.Key)
		switch msg.Topic {
		case o.SpillTopic:
			if appid, err := strconv.ParseInt(k[:max(strings.IndexByte(k, ':'), 0)], 10, 64); err == nil && o.SpillTopic != "" {
				p := 0
				for _, h := range msg.Headers {
					if h.Key == HeaderOriginPartition {
						p, _ = strconv.Atoi(string(h.Value))
					}
				}
				return partitions[SpillPartition(appid, p, len(partitions))]
			}
		case o.PushTopic:
			if p, err := strconv.Atoi(k[strings.LastIndexByte(k, ':')+1:]); err == nil {
				return partitions[PushPartition(p, len(partitions))]
			}
		}
	}
	return kafkax.Partitioner.Balance(msg, partitions...)
}

// PushPartition is the imr.push partition, of n, of the push jobs derived
// from source partition p: all of one source partition's on one, in order.
func PushPartition(p, n int) int { return p % max(n, 1) }

// SpillPartition is the spill topic's partition, of n, of appid's events
// held back from source partition p: murmur2 of the appid, plus p, modulo
// n. One app's held events of one source partition share a partition, in
// order; a flooding app's, held on many source partitions, spread over as
// many spill partitions: their writes go in parallel (a kafka-go writer
// has one write in flight per partition) and several drainers share them.
func SpillPartition(appid int64, p, n int) int {
	n = max(n, 1)
	return (kafkax.PartitionFor(strconv.AppendInt(nil, appid, 10), n) + p%n) % n
}
