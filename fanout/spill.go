package fanout

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/imstream/imstream/internal/plumbing/kafkax"
	"github.com/imstream/imstream/store"
)

// spiller writes one lane partition's held events to the spill topic and
// raises their held marks, off the batch's way: the partition's next
// batches are routed meanwhile, and a batch is committed only once its
// spill is written (kafkax.Batch.Later).
//
// It writes the batches' spills in the order they were handed over, one
// step at a time, each step taking every spill waiting: an app's held
// events reach the spill topic in source order (the drainer drops an
// event at or below its drained mark, so a later event must not pass an
// earlier one), and the held marks only rise (Hold is a plain HSET).
// After a step fails, every later one fails without writing; the consume
// loop then reads the partition again from the first batch whose spill
// failed, with a new spiller (fairShare.part starts the partition's state
// again).
type spiller struct {
	store store.SpillStore

	mu      sync.Mutex
	queue   []*spillJob
	running bool
	err     error     // the first failure
	last    time.Time // when the last step began
}

// spillEvery is the least time between two steps of a spiller: the
// partition's spills in between are written together, in one produce
// request and one HSET of the marks, instead of one of each per batch
// (the batches meanwhile go on; only their commits wait).
const spillEvery = 50 * time.Millisecond

// spillJob is one batch's held events and the held marks they raise.
type spillJob struct {
	ctx  context.Context
	w    *kafka.Writer
	recs []kafka.Message
	held map[string]int64

	done    chan struct{}
	refused map[int]error // indexes in recs, as kafkax.WriteRefusing
	err     error
}

// submit hands recs (to write through w) and held over, after every
// earlier submission.
func (s *spiller) submit(ctx context.Context, w *kafka.Writer, recs []kafka.Message, held map[string]int64) *spillJob {
	j := &spillJob{ctx: ctx, w: w, recs: recs, held: held, done: make(chan struct{})}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.queue = append(s.queue, j)
	if !s.running {
		s.running = true
		go s.run()
	}
	return j
}

// wait returns, once j is written, the records refused, or why it was not.
func (j *spillJob) wait() (map[int]error, error) {
	<-j.done
	return j.refused, j.err
}

// clear forgets a failure, for a caller that waited for every job it
// submitted (so that none is in flight) and will submit the failed ones
// again.
func (s *spiller) clear() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.err = nil
}

func (s *spiller) run() {
	for {
		s.mu.Lock()
		if wait := spillEvery - time.Since(s.last); wait > 0 {
			s.mu.Unlock()
			time.Sleep(wait)
			s.mu.Lock()
		}
		s.last = time.Now()
		jobs, failed := s.queue, s.err
		s.queue = nil
		if len(jobs) == 0 {
			s.running = false
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		if failed != nil {
			for _, j := range jobs {
				j.err = fmt.Errorf("an earlier spill write of the partition failed: %w", failed)
				close(j.done)
			}
			continue
		}
		s.step(jobs)
	}
}

// step writes jobs' records in one write and raises their marks beside it;
// a failure is recorded before the jobs are told.
func (s *spiller) step(jobs []*spillJob) {
	ctx, w := jobs[0].ctx, jobs[0].w
	var recs []kafka.Message
	held := map[string]int64{}
	for _, j := range jobs {
		recs = append(recs, j.recs...)
		for k, v := range j.held {
			held[k] = max(held[k], v)
		}
	}
	var herr error
	hdone := make(chan struct{})
	go func() {
		defer close(hdone)
		if len(held) > 0 {
			if herr = s.store.Hold(ctx, held); herr != nil {
				herr = fmt.Errorf("fair share: raise held marks: %w", herr)
			}
		}
	}()
	var refused map[int]error
	var err error
	if len(recs) > 0 {
		refused, err = kafkax.WriteRefusing(ctx, w, recs...)
	}
	<-hdone
	if err = errors.Join(err, herr); err != nil {
		s.mu.Lock()
		s.err = err
		s.mu.Unlock()
	}
	n := 0
	for _, j := range jobs {
		j.err = err
		for i := range j.recs {
			if e, ok := refused[n+i]; ok {
				if j.refused == nil {
					j.refused = map[int]error{}
				}
				j.refused[i] = e
			}
		}
		n += len(j.recs)
		close(j.done)
	}
}
