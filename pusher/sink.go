package pusher

import "context"

// Sink appends push entries to their lists, exactly once per source
// position.
//
// Append takes entries in the order their jobs were read. For each list and
// source partition it atomically appends the entries whose position is above
// that pair's watermark and raises the watermark, so a replay of entries
// already written (after a crash, a retry, a rebalance, or a fanout that
// re-produced its jobs) appends nothing twice. Entries of one list and
// source partition must arrive in increasing position, except for such
// replays. It blocks until the writes are acknowledged; an error means some
// lists may be written and others not, and the caller retries the same
// entries. Safe for concurrent use; ctx cancels the wait.
type Sink interface {
	Append(ctx context.Context, entries []Entry) error
}

// stream is one (list, source partition) pair: the unit of atomicity.
type stream struct {
	list, topic string
	partition   int
}

// groupByStream splits entries into streams, keeping their order.
func groupByStream(entries []Entry) ([]stream, map[stream][]*Entry) {
	var order []stream
	by := make(map[stream][]*Entry, 4)
	for i := range entries {
		e := &entries[i]
		k := stream{e.List, e.SrcTopic, e.SrcPartition}
		if _, ok := by[k]; !ok {
			order = append(order, k)
		}
		by[k] = append(by[k], e)
	}
	return order, by
}
