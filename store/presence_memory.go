package store

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/imstream/imstream/schemas"
)

type userKey struct{ appid, id int64 }

type subEntry struct {
	epoch  int64
	online bool
}

// MemoryPresence is an in-process PresenceStore with the same semantics as
// RedisPresence.
type MemoryPresence struct {
	lease   time.Duration
	mu      sync.RWMutex
	servers map[string]serverState
	users   map[userKey]map[string]subEntry
	rooms   map[userKey]map[string]int64
	apps    map[int64]map[string]int64 // appid → server → the latest epoch a user of it subscribed in
	prog    map[string]progressEntry
}

var (
	_ PresenceStore    = (*MemoryPresence)(nil)
	_ Collector        = (*MemoryPresence)(nil)
	_ ProgressRecorder = (*MemoryPresence)(nil)
)

// NewMemoryPresence returns an empty store granting leases of lease.
func NewMemoryPresence(lease time.Duration) *MemoryPresence {
	return &MemoryPresence{lease: lease, servers: map[string]serverState{},
		users: map[userKey]map[string]subEntry{}, rooms: map[userKey]map[string]int64{}, apps: map[int64]map[string]int64{}, prog: map[string]progressEntry{}}
}

// Progress implements ProgressRecorder.
func (m *MemoryPresence) Progress(ctx context.Context, process string, through, now time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.prog[process] = progressEntry{through.UnixMilli(), now.UnixMilli()}
	return ctx.Err()
}

// JudgedAt implements PresenceStore.
func (m *MemoryPresence) JudgedAt(ctx context.Context, now time.Time) (time.Time, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return time.UnixMilli(m.at(now)), ctx.Err()
}

// at is when leases are judged (judgedAt); m.mu is held.
func (m *MemoryPresence) at(now time.Time) int64 {
	entries := make([]progressEntry, 0, len(m.prog))
	for _, e := range m.prog {
		entries = append(entries, e)
	}
	return judgedAt(entries, now.UnixMilli())
}

// Apply implements PresenceStore.
func (m *MemoryPresence) Apply(ctx context.Context, evs []*schemas.Presence, now time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, ev := range evs {
		switch ev.Type {
		case schemas.TypeServerUp, schemas.TypeHeartbeat, schemas.TypeServerDown:
			if s, changed := applyServer(m.servers[ev.Server], ev, leaseStart(ev, now)+m.lease.Milliseconds()); changed {
				m.servers[ev.Server] = s
			}
		case schemas.TypeSubscribe:
			k := userKey{ev.AppID, ev.UID}
			subs := m.users[k]
			if cur, ok := subs[ev.Server]; ok && cur.epoch > ev.Epoch {
				continue
			}
			if subs == nil {
				subs = map[string]subEntry{}
				m.users[k] = subs
			}
			subs[ev.Server] = subEntry{ev.Epoch, ev.IsOnline()}
			apps := m.apps[ev.AppID]
			if apps == nil {
				apps = map[string]int64{}
				m.apps[ev.AppID] = apps
			}
			apps[ev.Server] = max(apps[ev.Server], ev.Epoch)
		case schemas.TypeUnsubscribe:
			k := userKey{ev.AppID, ev.UID}
			if cur, ok := m.users[k][ev.Server]; ok && cur.epoch <= ev.Epoch {
				delete(m.users[k], ev.Server)
				if len(m.users[k]) == 0 {
					delete(m.users, k)
				}
			}
		case schemas.TypeSubscribeRoom:
			k := userKey{ev.AppID, ev.RoomID}
			subs := m.rooms[k]
			if cur, ok := subs[ev.Server]; ok && cur > ev.Epoch {
				continue
			}
			if subs == nil {
				subs = map[string]int64{}
				m.rooms[k] = subs
			}
			subs[ev.Server] = ev.Epoch
		case schemas.TypeUnsubscribeRoom:
			k := userKey{ev.AppID, ev.RoomID}
			if cur, ok := m.rooms[k][ev.Server]; ok && cur <= ev.Epoch {
				delete(m.rooms[k], ev.Server)
				if len(m.rooms[k]) == 0 {
					delete(m.rooms, k)
				}
			}
		}
	}
	return nil
}

// Users implements PresenceStore.
func (m *MemoryPresence) Users(ctx context.Context, appid int64, uids []int64, now time.Time) ([]UserPresence, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	ms := m.at(now)
	out := make([]UserPresence, len(uids))
	for i, uid := range uids {
		for srv, e := range m.users[userKey{appid, uid}] {
			if m.servers[srv].valid(e.epoch, ms) {
				out[i].Servers = append(out[i].Servers, srv)
				out[i].Online = out[i].Online || e.online
			}
		}
		sort.Strings(out[i].Servers)
	}
	return out, nil
}

// Room implements PresenceStore.
func (m *MemoryPresence) Room(ctx context.Context, appid, room int64, now time.Time) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	var out []string
	for srv, epoch := range m.rooms[userKey{appid, room}] {
		if m.servers[srv].valid(epoch, m.at(now)) {
			out = append(out, srv)
		}
	}
	sort.Strings(out)
	return out, nil
}

// AppServers implements PresenceStore.
func (m *MemoryPresence) AppServers(ctx context.Context, appid int64, now time.Time) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	var out []string
	for srv, epoch := range m.apps[appid] {
		if m.servers[srv].valid(epoch, m.at(now)) {
			out = append(out, srv)
		}
	}
	sort.Strings(out)
	return out, nil
}

// LiveServers implements PresenceStore.
func (m *MemoryPresence) LiveServers(ctx context.Context, now time.Time) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	var out []string
	at := m.at(now)
	for id, s := range m.servers {
		if s.live(at) {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out, nil
}

// Collect implements Collector: it drops entries whose epoch is void or
// whose server has been dead for longer than a lease.
func (m *MemoryPresence) Collect(ctx context.Context, now time.Time) (CollectStats, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cutoff := m.at(now) - m.lease.Milliseconds()
	stale := func(srv string, epoch int64) bool {
		s := m.servers[srv]
		return epoch < s.Epoch || (epoch == s.Epoch && !s.live(cutoff))
	}
	n := 0
	for k, subs := range m.users {
		for srv, e := range subs {
			if stale(srv, e.epoch) {
				delete(subs, srv)
				n++
			}
		}
		if len(subs) == 0 {
			delete(m.users, k)
		}
	}
	for appid, srvs := range m.apps {
		for srv, e := range srvs {
			if stale(srv, e) {
				delete(srvs, srv) // an index entry, not a user's: not counted in Removed
			}
		}
		if len(srvs) == 0 {
			delete(m.apps, appid)
		}
	}
	for k, subs := range m.rooms {
		for srv, e := range subs {
			if stale(srv, e) {
				delete(subs, srv)
				n++
			}
		}
		if len(subs) == 0 {
			delete(m.rooms, k)
		}
	}
	return CollectStats{Removed: n, Users: len(m.users), Rooms: len(m.rooms)}, ctx.Err()
}
