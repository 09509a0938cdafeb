package kafkax

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/imstream/imstream/internal/plumbing/tick"
)

// fetcher reads one partition over a kafka-go Conn to its leader and hands
// the records over in chunks, one channel send per chunk.
//
// It replaces kafka.Reader in the consume loop: the Reader sends every
// record through its own channel and resets the socket deadline per record,
// and a second per-record hand-off was needed on top of it because it
// cannot tell whether more input is waiting. Here a chunk is whatever one
// fetch response holds, up to MaxBatch records, so the partition worker
// sees at once how much is waiting.
type fetcher struct {
	conn      *Conn
	dialer    *kafka.Dialer
	brokers   []string
	topic     string
	partition int
	maxBytes  int
	maxWait   time.Duration // the broker's wait for data (fetch max wait)
	chunk     int           // records per hand-off
	queueSize int           // records fetched but not yet taken before fetching pauses
	retryMin  time.Duration
	retryMax  time.Duration
	log       *slog.Logger

	out     chan chunk
	commits *committer
	onReset func(topic string, partition int)

	// The incarnation being read, and the last record handed over (or the
	// one before the committed offset), to check the log against when
	// (re)connecting; lastOff is -1 when unknown.
	inc     Incarnation
	lastOff int64
	lastFP  string

	mu       sync.Mutex
	buffered int           // records sent on out and not yet taken
	space    chan struct{} // signalled when taken brings buffered below queueSize
}

// chunk is records of one incarnation.
type chunk struct {
	recs []kafka.Message
	inc  Incarnation
}

// fetchSafety bounds a fetch beyond the broker's own wait: a broker that
// does not answer within it is treated as a broken connection.
const fetchSafety = 10 * time.Second

func newFetcher(c *Conn, cfg ConsumerConfig, log *slog.Logger, topic string, partition int) *fetcher {
	return &fetcher{
		conn: c, dialer: c.Dialer, brokers: c.Brokers, topic: topic, partition: partition,
		maxBytes: max(cfg.MaxFetchBytes, 1<<20), maxWait: 250 * time.Millisecond,
		chunk: max(cfg.MaxBatch, 1), queueSize: max(cfg.QueueSize, 1),
		retryMin: max(cfg.RetryMin, 10*time.Millisecond), retryMax: max(cfg.RetryMax, cfg.RetryMin, 10*time.Millisecond),
		log: log, out: make(chan chunk, max(cfg.QueueSize, 1)), space: make(chan struct{}, 1),
		onReset: cfg.Hooks.LogReset, lastOff: -1,
	}
}

// init reads the metadata committed with offset (retrying until ctx ends)
// to learn the incarnation and the record to check the log against. It
// reports false when ctx ended.
func (f *fetcher) init(ctx context.Context, group string, offset int64) bool {
	if offset < 0 {
		return true // nothing committed: dial starts an incarnation
	}
	backoff := tick.Backoff{Min: f.retryMin, Max: f.retryMax}
	for {
		meta, err := f.committedMeta(ctx, group)
		if err == nil {
			if m, ok := parseMeta(meta); ok {
				f.inc = m.inc
				if m.fp != "" && offset > 0 {
					f.lastOff, f.lastFP = offset-1, m.fp
				}
			}
			f.commits.start(f.topic, f.partition, f.inc)
			return true
		}
		f.log.Warn("reading committed offset metadata failed; retrying", "topic", f.topic, "partition", f.partition, "backoff", backoff.Step(), "err", err)
		if !backoff.Wait(ctx) {
			return false
		}
	}
}

func (f *fetcher) committedMeta(ctx context.Context, group string) (string, error) {
	ps, err := f.conn.committed(ctx, group, f.topic, []int{f.partition})
	return ps[f.partition].Metadata, err
}

// taken tells the fetcher that the worker took n records off out.
func (f *fetcher) taken(n int) {
	f.mu.Lock()
	f.buffered -= n
	below := f.buffered < f.queueSize
	f.mu.Unlock()
	if below {
		select {
		case f.space <- struct{}{}:
		default:
		}
	}
}

// send hands a chunk to the worker, first waiting while queueSize records
// are buffered. It reports false when ctx ended.
func (f *fetcher) send(ctx context.Context, recs []kafka.Message) bool {
	last := &recs[len(recs)-1]
	f.lastOff, f.lastFP = last.Offset, Fingerprint(last)
	for {
		f.mu.Lock()
		full := f.buffered >= f.queueSize
		if !full {
			f.buffered += len(recs)
		}
		f.mu.Unlock()
		if !full {
			break
		}
		select {
		case <-f.space:
		case <-ctx.Done():
			return false
		}
	}
	select {
	case f.out <- chunk{recs: recs, inc: f.inc}:
		return true
	case <-ctx.Done():
		return false
	}
}

// run fetches from offset until ctx ends, then closes out. Connection
// failures and leader moves are retried with back-off; nothing is skipped
// except records the broker no longer holds (retention), which is logged.
func (f *fetcher) run(ctx context.Context, offset int64) {
	defer close(f.out)
	backoff := tick.Backoff{Min: f.retryMin, Max: f.retryMax}
	pause := func(err error) bool {
		if ctx.Err() != nil {
			return false
		}
		f.log.Warn("fetch failed; retrying", "topic", f.topic, "partition", f.partition, "offset", offset, "backoff", backoff.Step(), "err", err)
		return backoff.Wait(ctx)
	}
	for ctx.Err() == nil {
		conn, next, err := f.dial(ctx, offset)
		if err != nil {
			if !pause(err) {
				return
			}
			continue
		}
		offset = next
		// A fetch blocks up to maxWait; closing the connection ends it at
		// once when the partition is revoked.
		stop := context.AfterFunc(ctx, func() { conn.Close() })
		next, err = f.fetchLoop(ctx, conn, offset, backoff.Reset)
		stop()
		conn.Close()
		offset = next
		if err != nil && !pause(err) {
			return
		}
	}
}

// dial connects to the partition's leader and positions the connection at
// offset, resolving FirstOffset and an offset the broker no longer holds
// to the first one it does.
func (f *fetcher) dial(ctx context.Context, offset int64) (*kafka.Conn, int64, error) {
	conn, err := dialLeader(ctx, f.dialer, f.brokers, f.topic, f.partition)
	if err != nil {
		return nil, offset, err
	}
	next, err := f.resolve(ctx, conn, offset)
	if err != nil {
		conn.Close()
		return nil, offset, err
	}
	return conn, next, nil
}

// dialLeader connects to the leader of partition p of topic, asking each
// broker in turn.
func dialLeader(ctx context.Context, d *kafka.Dialer, brokers []string, topic string, p int) (*kafka.Conn, error) {
	err := errors.New("no broker")
	for _, b := range brokers {
		var conn *kafka.Conn
		if conn, err = d.DialLeader(ctx, "tcp", b, topic, p); err == nil {
			return conn, nil
		}
	}
	return nil, fmt.Errorf("dial leader: %w", err)
}

// resolve maps offset onto the partition's log and positions conn there.
// FirstOffset (nothing committed) starts an incarnation at the first
// offset held. An offset before the first one held (retention) moves to
// the first, with a WARN line. When the log is not the one the last record
// handed over came from — it is now shorter than that record's offset, or
// holds another record there — the log started again: a new incarnation
// begins at its first offset.
func (f *fetcher) resolve(ctx context.Context, conn *kafka.Conn, offset int64) (int64, error) {
	conn.SetDeadline(time.Now().Add(fetchSafety))
	defer conn.SetDeadline(time.Time{})
	first, last, err := conn.ReadOffsets()
	if err != nil {
		return offset, fmt.Errorf("read offsets: %w", err)
	}
	restarted := ""
	switch {
	case offset == kafka.FirstOffset:
		if err := f.begin(ctx, Fresh(), first); err != nil {
			return offset, err
		}
		offset = first
	case offset == kafka.LastOffset:
		offset = last
	case f.lastOff >= 0 && f.lastOff >= last:
		restarted = fmt.Sprintf("the log ends at %d, before offset %d already read", last, f.lastOff)
	case f.lastOff >= first:
		same, err := f.holds(conn, f.lastOff, f.lastFP)
		if err != nil {
			return offset, err
		}
		if !same {
			restarted = fmt.Sprintf("offset %d holds another record than the one read there", f.lastOff)
		}
	case offset > last:
		restarted = fmt.Sprintf("offset %d is past the end of the log (%d)", offset, last)
	}
	if restarted == "" && offset >= 0 && offset < first {
		f.log.Warn("offset no longer held by the broker; skipping to the first one held", "topic", f.topic, "partition", f.partition,
			"offset", offset, "first", first, "skipped", first-offset)
		offset = first
	}
	if restarted != "" {
		inc := Restarted()
		if err := f.begin(ctx, inc, first); err != nil {
			return offset, err
		}
		f.log.Warn("partition log started again (topic re-created, broker data lost, or another cluster); reading the new log from its beginning as a new incarnation",
			"topic", f.topic, "partition", f.partition, "reason", restarted, "incarnation", inc, "first", first, "end", last)
		if f.onReset != nil {
			f.onReset(f.topic, f.partition)
		}
		offset = first
	}
	if _, err := conn.Seek(offset, kafka.SeekAbsolute|kafka.SeekDontCheck); err != nil {
		return offset, fmt.Errorf("seek %d: %w", offset, err)
	}
	return offset, nil
}

// begin starts incarnation inc at offset first, committed before anything
// of it is read.
func (f *fetcher) begin(ctx context.Context, inc Incarnation, first int64) error {
	if err := f.commits.restart(ctx, f.topic, f.partition, inc, first); err != nil {
		return fmt.Errorf("commit the start of incarnation %s: %w", inc, err)
	}
	f.inc, f.lastOff, f.lastFP = inc, -1, ""
	return nil
}

// holds reports whether the record at offset has fingerprint fp. A record
// the log does not show at that offset (compaction, control batches) is
// taken as the same log: nothing tells otherwise.
func (f *fetcher) holds(conn *kafka.Conn, offset int64, fp string) (bool, error) {
	if _, err := conn.Seek(offset, kafka.SeekAbsolute|kafka.SeekDontCheck); err != nil {
		return false, fmt.Errorf("seek %d: %w", offset, err)
	}
	batch := conn.ReadBatchWith(kafka.ReadBatchConfig{MinBytes: 1, MaxBytes: f.maxBytes, MaxWait: f.maxWait})
	m, err := batch.ReadMessage()
	cerr := batch.Close()
	if err != nil {
		if cerr != nil {
			err = cerr
		}
		return false, fmt.Errorf("read offset %d to check the log: %w", offset, err)
	}
	if m.Offset != offset {
		return true, nil
	}
	return holdsFingerprint(&m, fp), nil
}

// fetchLoop fetches over one connection until an error that needs a new
// connection (returned) or ctx ends (nil). It returns the next offset to
// read. ok is called after every fetch that succeeded.
func (f *fetcher) fetchLoop(ctx context.Context, conn *kafka.Conn, offset int64, ok func()) (int64, error) {
	for ctx.Err() == nil {
		conn.SetReadDeadline(time.Now().Add(f.maxWait + fetchSafety))
		batch := conn.ReadBatchWith(kafka.ReadBatchConfig{MinBytes: 1, MaxBytes: f.maxBytes, MaxWait: f.maxWait})
		var recs []kafka.Message
		for {
			m, err := batch.ReadMessage()
			if err != nil {
				break
			}
			if recs == nil {
				recs = make([]kafka.Message, 0, f.chunk)
			}
			recs = append(recs, m)
			offset = m.Offset + 1
			if len(recs) == f.chunk {
				if !f.send(ctx, recs) {
					batch.Close()
					return offset, nil
				}
				recs = nil
				// send may have waited for a slow handler (a retried
				// batch while Redis is down) with the response half read.
				conn.SetReadDeadline(time.Now().Add(fetchSafety))
			}
		}
		err := batch.Close()
		if len(recs) > 0 && !f.send(ctx, recs) {
			return offset, nil
		}
		if next, _ := conn.Offset(); next > offset {
			offset = next // past records the log no longer shows (compaction, control batches)
		}
		switch {
		case err == nil, errors.Is(err, kafka.RequestTimedOut):
			ok()
		case errors.Is(err, kafka.OffsetOutOfRange):
			next, rerr := f.resolve(ctx, conn, offset)
			if rerr != nil {
				return offset, rerr
			}
			offset = next
		case ctx.Err() != nil:
			return offset, nil
		default:
			return offset, err
		}
	}
	return offset, nil
}
