package store

import (
	"context"

	"github.com/imstream/imstream/schemas"
)

// Group is a group's membership at the time of a read.
type Group struct {
	AppID   int64
	ID      int64
	Super   bool
	Members []int64 // sorted
	Muted   []int64 // sorted
}

// GroupStore keeps group membership, maintained from imr.groups events.
//
// Apply applies events in order; re-applying a suffix of the events already
// applied (a replay) leaves the same state. Group returns nil and no error
// for an unknown (never created or disbanded) group. Safe for concurrent
// use; calls block until the store answered and return ctx's error when it
// ends first. The returned Group must not be modified.
type GroupStore interface {
	Apply(ctx context.Context, evs []*schemas.Group) error
	Group(ctx context.Context, appid, gid int64) (*Group, error)
}
