package pusher

import (
	"context"
	"strconv"
	"sync"
)

// MemorySink is an in-process Sink with the same exactly-once semantics as
// RedisSink, for unit tests and experiments.
type MemorySink struct {
	mu    sync.Mutex
	lists map[string][]string
	wm    map[string]int64
}

var _ Sink = (*MemorySink)(nil)

// NewMemorySink returns an empty sink.
func NewMemorySink() *MemorySink {
	return &MemorySink{lists: map[string][]string{}, wm: map[string]int64{}}
}

// Append implements Sink.
func (s *MemorySink) Append(ctx context.Context, topic string, partition int, entries []Entry) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	start := map[string]int64{}
	for _, e := range entries {
		k := e.List + "\x00" + topic + "\x00" + strconv.Itoa(partition)
		w, ok := start[k]
		if !ok {
			w, ok = s.wm[k]
			if !ok {
				w = -1
			}
			start[k] = w
		}
		if e.Offset <= w {
			continue
		}
		s.lists[e.List] = append(s.lists[e.List], string(e.Data))
		if cur, ok := s.wm[k]; !ok || e.Offset > cur {
			s.wm[k] = e.Offset
		}
	}
	return nil
}

// List returns a copy of a list's entries.
func (s *MemorySink) List(name string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.lists[name]...)
}
