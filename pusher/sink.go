package pusher

import "context"

// Sink appends push entries to their lists, exactly once per source
// position.
//
// Append takes entries in the order their jobs were read. For each list,
// source partition and app it atomically appends the entries whose
// position is above that stream's watermark and raises the watermark, so a replay of entries
// already written (after a crash, a retry, a rebalance, or a fanout that
// re-produced its jobs) appends nothing twice, also when the replay is in
// the same call as the original. Entries of one list, source partition and
// app must arrive in increasing position, except for such replays (one
// app's may come after later ones of another: fair share holds an app
// back and routes it later); the entries
// of one job share its Pos and Job. It blocks until the writes are
// acknowledged; an error means some lists may be written and others not,
// and the caller retries the same entries. On success every entry's Written
// tells whether it was appended (false: a repeat). Safe for concurrent use;
// ctx cancels the wait.
type Sink interface {
	Append(ctx context.Context, entries []Entry) error
}

// stream is one (list, source partition, app): the unit of atomicity.
type stream struct {
	list, topic string
	partition   int
	app         int64
}

// groupByStream splits entries into streams, keeping their order, and
// drops replays inside the batch: a job (a run of entries with one Pos and
// Job) whose position is not above an earlier job's of the same stream.
// That is a job the fanout re-produced after a crash, or written by two
// fanout instances overlapping in a rebalance, landing in the same batch as
// the original; replays of earlier batches are the watermark's to drop.
func groupByStream(entries []Entry) ([]stream, map[stream][]*Entry) {
	type run struct {
		pos, job, hi int64
		keep         bool
	}
	var order []stream
	by := make(map[stream][]*Entry, 4)
	runs := make(map[stream]*run, 4)
	for i := range entries {
		e := &entries[i]
		k := stream{e.List, e.SrcTopic, e.SrcPartition, e.App}
		r := runs[k]
		if r == nil {
			r = &run{pos: e.Pos, job: e.Job, hi: e.Pos, keep: true}
			runs[k] = r
		} else if e.Pos != r.pos || e.Job != r.job { // the next job
			r.pos, r.job, r.keep = e.Pos, e.Job, e.Pos > r.hi
			r.hi = max(r.hi, e.Pos)
		}
		if !r.keep {
			continue
		}
		if _, ok := by[k]; !ok {
			order = append(order, k)
		}
		by[k] = append(by[k], e)
	}
	return order, by
}
