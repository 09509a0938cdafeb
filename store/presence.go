package store

import (
	"context"
	"time"

	"github.com/imstream/imstream/schemas"
)

// UserPresence is one user's presence at the time of a read.
type UserPresence struct {
	Online  bool     // a live server holds a subscription with online=true
	Servers []string // live servers holding any subscription, sorted
}

// PresenceStore keeps which users and rooms are present on which live IM
// server.
//
// Apply applies events in the order given (one source partition's order);
// it is idempotent (applying an event twice changes nothing) and ignores
// events older than the state they would change (an older epoch). Leases
// run from the event's ts (capped at now) or now when the event has none.
// The read methods judge liveness at now. All methods are safe for
// concurrent use, block until the store answered, and return ctx's error
// when it ends first.
type PresenceStore interface {
	Apply(ctx context.Context, evs []*schemas.Presence, now time.Time) error
	// Users returns the presence of each uid of appid, in order (pipelined:
	// one round trip for any number of users).
	Users(ctx context.Context, appid int64, uids []int64, now time.Time) ([]UserPresence, error)
	// Room returns the live servers with subscribers of room, sorted.
	Room(ctx context.Context, appid, room int64, now time.Time) ([]string, error)
	// LiveServers returns the live servers, sorted.
	LiveServers(ctx context.Context, now time.Time) ([]string, error)
	// AppServers returns the live servers on which a user of appid
	// subscribed in the server's current epoch, sorted: from an index kept
	// with the presence state, without a scan of the app's users. A
	// server whose last user of the app left may still be named (until
	// its epoch changes or its lease lapses): a broadcast to it reaches no
	// one.
	AppServers(ctx context.Context, appid int64, now time.Time) ([]string, error)
	// JudgedAt returns the time the read methods judge leases at when
	// called at now: min(now, how far presence has applied the log). It
	// names the presence snapshot a decision read (the fanout writes it
	// on its outputs, docs/protocol.md §6).
	JudgedAt(ctx context.Context, now time.Time) (time.Time, error)
}

// ProgressRecorder is implemented by stores whose leases follow the
// presence stage's progress, not only the clock. Each presence process
// records, every second, the time through which it has applied its
// partitions (the origin time of the oldest record it is still applying or
// retrying; now when it is caught up). Readers then judge leases at
// min(now, the earliest of the live processes' times): while presence
// cannot apply (Redis failing, presence lagging) no lease expires because
// of that; a server expires only when its heartbeats stopped arriving in
// the log (docs/protocol.md §2). A process whose record was not written for
// ProgressForget while others' were is gone and no longer counts.
type ProgressRecorder interface {
	Progress(ctx context.Context, process string, through, now time.Time) error
}

// ProgressForget is how far behind the newest record a process's progress
// record may fall before readers ignore it (the process stopped; its
// partitions moved to others).
const ProgressForget = 10 * time.Second

// progressEntry is one process's record: applied through, written at.
type progressEntry struct{ through, written int64 }

// judgedAt returns when leases are judged: min(now, the earliest through of
// the processes whose records are current).
func judgedAt(entries []progressEntry, now int64) int64 {
	newest := int64(0)
	for _, e := range entries {
		newest = max(newest, e.written)
	}
	at := now
	for _, e := range entries {
		if e.written >= newest-ProgressForget.Milliseconds() {
			at = min(at, e.through)
		}
	}
	return at
}

// UsersBy reads the presence of uids of appid through s in pipelines of at
// most n users, one after another (n <= 0: one pipeline), so that a big
// group's members cost one pipeline's replies in flight at a time.
func UsersBy(ctx context.Context, s PresenceStore, appid int64, uids []int64, now time.Time, n int) ([]UserPresence, error) {
	if n <= 0 || len(uids) <= n {
		return s.Users(ctx, appid, uids, now)
	}
	out := make([]UserPresence, 0, len(uids))
	for i := 0; i < len(uids); i += n {
		res, err := s.Users(ctx, appid, uids[i:min(i+n, len(uids))], now)
		if err != nil {
			return nil, err
		}
		out = append(out, res...)
	}
	return out, nil
}

// Collector is implemented by stores that garbage-collect stale entries
// (entries of dead servers or void epochs). Collect walks every user and
// room and reports what it removed and what it saw.
type Collector interface {
	Collect(ctx context.Context, now time.Time) (CollectStats, error)
}

// CollectStats is the outcome of one collection pass.
type CollectStats struct {
	Removed int // stale entries removed
	Users   int // users with at least one entry left
	Rooms   int // rooms with at least one entry left
}

// serverState is a server's lifecycle state.
type serverState struct {
	Epoch int64
	Lease int64 // unix ms
	Down  int64 // epoch shut down cleanly, 0 none
}

func (s serverState) live(nowMs int64) bool { return s.Down != s.Epoch && s.Lease > nowMs }

// valid reports whether an entry written under epoch counts at nowMs.
func (s serverState) valid(epoch, nowMs int64) bool { return epoch == s.Epoch && s.live(nowMs) }

// leaseStart is when a lease granted by ev starts: its ts, capped at now.
func leaseStart(ev *schemas.Presence, now time.Time) int64 {
	n := now.UnixMilli()
	if ev.TS > 0 && ev.TS < n {
		return ev.TS
	}
	return n
}

// applyServer is the lifecycle transition shared by both implementations.
func applyServer(s serverState, ev *schemas.Presence, leaseUntil int64) (serverState, bool) {
	e := ev.Epoch
	switch ev.Type {
	case schemas.TypeServerUp, schemas.TypeHeartbeat:
		switch {
		case e <= s.Down || e < s.Epoch:
			return s, false // a shut-down or superseded epoch
		case e > s.Epoch:
			return serverState{Epoch: e, Lease: leaseUntil, Down: s.Down}, true
		case leaseUntil > s.Lease:
			s.Lease = leaseUntil
			return s, true
		}
	case schemas.TypeServerDown:
		if e >= s.Epoch && e > s.Down {
			return serverState{Epoch: e, Lease: 0, Down: e}, true
		}
	}
	return s, false
}
