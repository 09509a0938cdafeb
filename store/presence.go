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
