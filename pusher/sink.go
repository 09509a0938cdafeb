package pusher

import "context"

// Sink appends push entries to their lists, exactly once per source record.
//
// Append takes the entries of one source partition, in offset order. For
// each list it atomically appends the entries whose offset is above the
// list's watermark for that partition and raises the watermark, so a replay
// of records already written (after a crash, a retry or a rebalance)
// appends nothing twice. It blocks until the writes are acknowledged; an
// error means some lists may be written and others not, and the caller
// retries the same entries. Safe for concurrent use by different
// partitions; ctx cancels the wait.
type Sink interface {
	Append(ctx context.Context, topic string, partition int, entries []Entry) error
}
