package pusher

import (
	"context"
	"sync"
)

// MemorySink is an in-process Sink with the same exactly-once semantics as
// RedisSink, for unit tests and experiments.
type MemorySink struct {
	mu    sync.Mutex
	lists map[string][]string
	wm    map[stream]int64
}

var _ Sink = (*MemorySink)(nil)

// NewMemorySink returns an empty sink.
func NewMemorySink() *MemorySink {
	return &MemorySink{lists: map[string][]string{}, wm: map[stream]int64{}}
}

// Append implements Sink.
func (s *MemorySink) Append(ctx context.Context, entries []Entry) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range entries {
		entries[i].Written = false
	}
	order, by := groupByStream(entries)
	for _, k := range order {
		wm, ok := s.wm[k]
		if !ok {
			wm = -1
		}
		hi := wm
		for _, e := range by[k] {
			e.Written = e.Pos > wm
			if e.Written {
				s.lists[k.list] = append(s.lists[k.list], string(e.Data))
				hi = max(hi, e.Pos)
			}
		}
		s.wm[k] = hi
	}
	return nil
}

// List returns a copy of a list's entries.
func (s *MemorySink) List(name string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.lists[name]...)
}
