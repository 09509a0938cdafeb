package tick

import (
	"sync"
	"time"
)

// Quiet keeps a repeated log line to one per window, per key, and counts
// the lines it held back. The zero value is ready to use.
type Quiet struct {
	Now  func() time.Time // the clock; nil is time.Now (tests set their own)
	mu   sync.Mutex
	at   map[string]time.Time // when each key was last let through
	held map[string]int       // lines held back since
}

// Allow reports whether the line of key may be logged now — it was not
// within the last window — and, when so, how many were held back since it
// last was. Keys let through more than a minute ago with nothing held back
// are forgotten (an hour when lines were held back), so varying keys
// (error texts) do not pile up.
func (q *Quiet) Allow(key string, window time.Duration) (ok bool, held int) {
	now := time.Now()
	if q.Now != nil {
		now = q.Now()
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.at == nil {
		q.at, q.held = map[string]time.Time{}, map[string]int{}
	}
	if t, seen := q.at[key]; seen && now.Sub(t) < window {
		q.held[key]++
		return false, 0
	}
	held = q.held[key]
	delete(q.held, key)
	for k, t := range q.at {
		if age := now.Sub(t); age > time.Hour || age > time.Minute && q.held[k] == 0 {
			delete(q.at, k)
			delete(q.held, k)
		}
	}
	q.at[key] = now
	return true, held
}
