package store

import (
	"context"
	"slices"
	"sync"

	"github.com/imstream/imstream/schemas"
)

// MemoryGroups is an in-process GroupStore.
type MemoryGroups struct {
	mu     sync.RWMutex
	groups map[userKey]*Group
}

var _ GroupStore = (*MemoryGroups)(nil)

// NewMemoryGroups returns an empty store.
func NewMemoryGroups() *MemoryGroups { return &MemoryGroups{groups: map[userKey]*Group{}} }

func addSorted(s []int64, v int64) []int64 {
	i, found := slices.BinarySearch(s, v)
	if found {
		return s
	}
	return slices.Insert(slices.Clone(s), i, v)
}

func removeSorted(s []int64, v int64) []int64 {
	i, found := slices.BinarySearch(s, v)
	if !found {
		return s
	}
	return slices.Delete(slices.Clone(s), i, i+1)
}

// Apply implements GroupStore. Groups are copied on write, so a Group
// returned earlier never changes under its reader.
func (m *MemoryGroups) Apply(ctx context.Context, evs []*schemas.Group) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, ev := range evs {
		k := userKey{ev.AppID, ev.GroupID}
		old := m.groups[k]
		if ev.Type == schemas.TypeGroupDisband {
			delete(m.groups, k)
			continue
		}
		g := &Group{AppID: ev.AppID, ID: ev.GroupID}
		if old != nil {
			*g = *old
		}
		switch ev.Type {
		case schemas.TypeGroupCreate:
			g.Super = ev.Super
			for _, uid := range ev.Members {
				g.Members = addSorted(g.Members, uid)
			}
		case schemas.TypeGroupUpgrade:
			g.Super = ev.Super
		case schemas.TypeGroupMemberAdd:
			g.Members = addSorted(g.Members, ev.UID)
		case schemas.TypeGroupMemberRemove:
			g.Members = removeSorted(g.Members, ev.UID)
			g.Muted = removeSorted(g.Muted, ev.UID)
		case schemas.TypeGroupMemberMute:
			if ev.Mute {
				g.Muted = addSorted(g.Muted, ev.UID)
			} else {
				g.Muted = removeSorted(g.Muted, ev.UID)
			}
		}
		m.groups[k] = g
	}
	return nil
}

// Group implements GroupStore.
func (m *MemoryGroups) Group(ctx context.Context, appid, gid int64) (*Group, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.groups[userKey{appid, gid}], nil
}
