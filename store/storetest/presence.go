// Package storetest is the conformance suite every store implementation
// runs: RunPresence for PresenceStore, RunGroups for GroupStore.
package storetest

import (
	"context"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/imstream/imstream/schemas"
	"github.com/imstream/imstream/store"
)

// Lease is the lease the suite's stores must grant.
const Lease = 30 * time.Second

var t0 = time.UnixMilli(1_700_000_000_000)

func at(d time.Duration) time.Time { return t0.Add(d) }

func ev(typ schemas.Type, server string, epoch int64, f func(*schemas.Presence)) *schemas.Presence {
	p := &schemas.Presence{Header: schemas.Header{V: 1, Type: typ, Server: server, AppID: 7, TS: t0.UnixMilli()}, Epoch: epoch}
	if f != nil {
		f(p)
	}
	return p
}

func up(s string, e int64) *schemas.Presence   { return ev(schemas.TypeServerUp, s, e, nil) }
func down(s string, e int64) *schemas.Presence { return ev(schemas.TypeServerDown, s, e, nil) }
func hb(s string, e int64, ts time.Time) *schemas.Presence {
	return ev(schemas.TypeHeartbeat, s, e, func(p *schemas.Presence) { p.TS = ts.UnixMilli() })
}
func sub(s string, e, uid int64, online bool) *schemas.Presence {
	return ev(schemas.TypeSubscribe, s, e, func(p *schemas.Presence) { p.UID, p.Online = uid, &online })
}
func unsub(s string, e, uid int64) *schemas.Presence {
	return ev(schemas.TypeUnsubscribe, s, e, func(p *schemas.Presence) { p.UID = uid })
}
func subRoom(s string, e, room int64) *schemas.Presence {
	return ev(schemas.TypeSubscribeRoom, s, e, func(p *schemas.Presence) { p.RoomID = room })
}
func unsubRoom(s string, e, room int64) *schemas.Presence {
	return ev(schemas.TypeUnsubscribeRoom, s, e, func(p *schemas.Presence) { p.RoomID = room })
}

// user is the expected presence of one user ("" servers = absent).
type user struct {
	online  bool
	servers []string
}

func checkUsers(t *testing.T, s store.PresenceStore, now time.Time, want map[int64]user) {
	t.Helper()
	uids := make([]int64, 0, len(want))
	for uid := range want {
		uids = append(uids, uid)
	}
	got, err := s.Users(context.Background(), 7, uids, now)
	if err != nil {
		t.Fatal(err)
	}
	for i, uid := range uids {
		w := want[uid]
		if got[i].Online != w.online || !reflect.DeepEqual(nonNil(got[i].Servers), nonNil(w.servers)) {
			t.Errorf("user %d at +%s: got online=%v servers=%v, want online=%v servers=%v",
				uid, now.Sub(t0), got[i].Online, got[i].Servers, w.online, w.servers)
		}
	}
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func apply(t *testing.T, s store.PresenceStore, now time.Time, evs ...*schemas.Presence) {
	t.Helper()
	if err := s.Apply(context.Background(), evs, now); err != nil {
		t.Fatal(err)
	}
}

func checkRoom(t *testing.T, s store.PresenceStore, room int64, now time.Time, want ...string) {
	t.Helper()
	got, err := s.Room(context.Background(), 7, room, now)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(nonNil(got), nonNil(want)) {
		t.Errorf("room %d at +%s: got %v, want %v", room, now.Sub(t0), got, want)
	}
}

// RunPresence runs the suite; newStore returns an empty store granting
// leases of Lease whose reads are never stale.
func RunPresence(t *testing.T, newStore func(t *testing.T) store.PresenceStore) {
	for _, c := range presenceCases {
		t.Run(c.name, func(t *testing.T) { c.run(t, newStore) })
	}
}

// presenceCases are the conformance cases, in the order they run.
var presenceCases = []struct {
	name string
	run  func(t *testing.T, newStore func(t *testing.T) store.PresenceStore)
}{
	{"subscribe and online flag", func(t *testing.T, newStore func(t *testing.T) store.PresenceStore) {
		s := newStore(t)
		apply(t, s, t0, up("s1", 1), up("s2", 1), sub("s1", 1, 100, true), sub("s1", 1, 101, false),
			sub("s2", 1, 101, true), sub("s2", 1, 102, false))
		checkUsers(t, s, at(time.Second), map[int64]user{
			100: {true, []string{"s1"}}, 101: {true, []string{"s1", "s2"}}, 102: {false, []string{"s2"}}, 103: {},
		})
		// the last subscribe per server wins
		apply(t, s, t0, sub("s1", 1, 100, false))
		checkUsers(t, s, at(time.Second), map[int64]user{100: {false, []string{"s1"}}})
		apply(t, s, t0, unsub("s2", 1, 101))
		checkUsers(t, s, at(time.Second), map[int64]user{101: {false, []string{"s1"}}})
	}},
	{"servers hosting an app", func(t *testing.T, newStore func(t *testing.T) store.PresenceStore) {
		s := newStore(t)
		other := sub("s3", 1, 100, true)
		other.AppID = 8
		apply(t, s, t0, up("s1", 1), up("s2", 1), up("s3", 1), sub("s1", 1, 100, true), sub("s2", 1, 101, false),
			sub("s2", 1, 102, true), other)
		checkApp := func(appid int64, now time.Time, want ...string) {
			t.Helper()
			got, err := s.AppServers(context.Background(), appid, now)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(nonNil(got), nonNil(want)) {
				t.Errorf("app %d at +%s: servers %v, want %v", appid, now.Sub(t0), got, want)
			}
		}
		checkApp(7, at(time.Second), "s1", "s2")
		checkApp(8, at(time.Second), "s3")
		checkApp(9, at(time.Second))
		// s2 restarts (a new epoch): its users of the old epoch no longer count.
		apply(t, s, t0, up("s2", 2))
		checkApp(7, at(time.Second), "s1")
		apply(t, s, t0, sub("s2", 2, 101, true))
		checkApp(7, at(time.Second), "s1", "s2")
		// s1's lease lapses: it is gone; so are they all after a lease.
		apply(t, s, at(Lease/2), hb("s2", 2, at(Lease/2)))
		checkApp(7, at(Lease+time.Second), "s2")
		if c, ok := s.(store.Collector); ok {
			if _, err := c.Collect(context.Background(), at(3*Lease)); err != nil {
				t.Fatal(err)
			}
			checkApp(7, at(3*Lease))
			apply(t, s, at(3*Lease), up("s1", 3), hb("s1", 3, at(3*Lease)), sub("s1", 3, 100, true))
			checkApp(7, at(3*Lease+time.Second), "s1")
		}
	}},
	{"appids are separate", func(t *testing.T, newStore func(t *testing.T) store.PresenceStore) {
		s := newStore(t)
		other := sub("s1", 1, 100, true)
		other.AppID = 8
		apply(t, s, t0, up("s1", 1), other)
		checkUsers(t, s, at(time.Second), map[int64]user{100: {}})
		got, _ := s.Users(context.Background(), 8, []int64{100}, at(time.Second))
		if !got[0].Online {
			t.Errorf("app 8 user not online")
		}
	}},
	{"unknown server does not count", func(t *testing.T, newStore func(t *testing.T) store.PresenceStore) {
		s := newStore(t)
		apply(t, s, t0, sub("s9", 1, 100, true))
		checkUsers(t, s, at(time.Second), map[int64]user{100: {}})
		apply(t, s, t0, up("s9", 1))
		checkUsers(t, s, at(time.Second), map[int64]user{100: {true, []string{"s9"}}})
	}},
	{"lease runs out without server_down", func(t *testing.T, newStore func(t *testing.T) store.PresenceStore) {
		s := newStore(t)
		apply(t, s, t0, up("s1", 1), up("s2", 1), sub("s1", 1, 100, true), sub("s2", 1, 100, true), subRoom("s1", 1, 5))
		checkUsers(t, s, at(Lease-time.Second), map[int64]user{100: {true, []string{"s1", "s2"}}})
		apply(t, s, at(20*time.Second), hb("s2", 1, at(20*time.Second)))
		checkUsers(t, s, at(Lease+time.Second), map[int64]user{100: {true, []string{"s2"}}})
		checkRoom(t, s, 5, at(Lease+time.Second))
		checkUsers(t, s, at(20*time.Second+Lease+time.Millisecond), map[int64]user{100: {}})
		live, _ := s.LiveServers(context.Background(), at(Lease+time.Second))
		if !reflect.DeepEqual(live, []string{"s2"}) {
			t.Errorf("live servers = %v", live)
		}
		// a heartbeat revives a server whose lease ran out (same epoch)
		apply(t, s, at(50*time.Second), hb("s1", 1, at(50*time.Second)))
		checkUsers(t, s, at(51*time.Second), map[int64]user{100: {true, []string{"s1"}}})
	}},
	{"leases follow presence's progress", func(t *testing.T, newStore func(t *testing.T) store.PresenceStore) {
		s := newStore(t)
		rec, ok := s.(store.ProgressRecorder)
		if !ok {
			t.Skip("not a ProgressRecorder")
		}
		ctx := context.Background()
		progress := func(process string, through, now time.Time) {
			t.Helper()
			if err := rec.Progress(ctx, process, through, now); err != nil {
				t.Fatal(err)
			}
		}
		apply(t, s, t0, up("s1", 1), sub("s1", 1, 100, true), subRoom("s1", 1, 5))
		// Presence applied through t0+5s, then could record nothing more
		// (Redis failing): a minute past the lease, s1 is still live.
		progress("a", at(5*time.Second), at(5*time.Second))
		late := at(Lease + time.Minute)
		checkUsers(t, s, late, map[int64]user{100: {true, []string{"s1"}}})
		checkRoom(t, s, 5, late, "s1")
		if live, _ := s.LiveServers(ctx, late); !reflect.DeepEqual(live, []string{"s1"}) {
			t.Errorf("live servers while presence is behind = %v, want [s1]", live)
		}
		if c, ok := s.(store.Collector); ok {
			if st, err := c.Collect(ctx, late); err != nil || st.Removed != 0 {
				t.Errorf("collect while presence is behind: removed %d (%v), want 0", st.Removed, err)
			}
		}
		// Another process records that it is caught up: a's record is
		// older than store.ProgressForget, a is gone, and the lease ran out.
		progress("b", late, late)
		checkUsers(t, s, late, map[int64]user{100: {}})
		// b falls behind (its heartbeats still in the log): judged at b's through.
		progress("b", at(10*time.Second), late)
		checkUsers(t, s, late, map[int64]user{100: {true, []string{"s1"}}})
	}},
	{"lease runs from the event ts, capped at now", func(t *testing.T, newStore func(t *testing.T) store.PresenceStore) {
		s := newStore(t)
		old := up("s1", 1)
		old.TS = at(-25 * time.Second).UnixMilli()
		apply(t, s, t0, old, sub("s1", 1, 100, true))
		checkUsers(t, s, at(4*time.Second), map[int64]user{100: {true, []string{"s1"}}})
		checkUsers(t, s, at(6*time.Second), map[int64]user{100: {}})
		future := up("s2", 1)
		future.TS = at(time.Hour).UnixMilli()
		apply(t, s, t0, future, sub("s2", 1, 101, true))
		checkUsers(t, s, at(Lease+time.Second), map[int64]user{101: {}})
	}},
	{"server_down clears at once", func(t *testing.T, newStore func(t *testing.T) store.PresenceStore) {
		s := newStore(t)
		apply(t, s, t0, up("s1", 3), sub("s1", 3, 100, true), subRoom("s1", 3, 5), down("s1", 3))
		checkUsers(t, s, at(time.Second), map[int64]user{100: {}})
		checkRoom(t, s, 5, at(time.Second))
		// late events of the shut-down epoch change nothing
		apply(t, s, t0, hb("s1", 3, at(time.Second)), up("s1", 3))
		checkUsers(t, s, at(2*time.Second), map[int64]user{100: {}})
		live, _ := s.LiveServers(context.Background(), at(2*time.Second))
		if len(live) != 0 {
			t.Errorf("live servers after down = %v", live)
		}
	}},
	{"new epoch voids the old one", func(t *testing.T, newStore func(t *testing.T) store.PresenceStore) {
		s := newStore(t)
		apply(t, s, t0, up("s1", 1), sub("s1", 1, 100, true), sub("s1", 1, 101, true), subRoom("s1", 1, 5))
		apply(t, s, t0, up("s1", 2))
		checkUsers(t, s, at(time.Second), map[int64]user{100: {}, 101: {}})
		checkRoom(t, s, 5, at(time.Second))
		apply(t, s, t0, sub("s1", 2, 100, true))
		checkUsers(t, s, at(time.Second), map[int64]user{100: {true, []string{"s1"}}, 101: {}})
		// events of the old epoch arriving late are ignored
		apply(t, s, t0, sub("s1", 1, 100, false), unsub("s1", 1, 100), hb("s1", 1, at(time.Second)))
		checkUsers(t, s, at(time.Second), map[int64]user{100: {true, []string{"s1"}}})
		apply(t, s, t0, up("s1", 1))
		checkUsers(t, s, at(time.Second), map[int64]user{100: {true, []string{"s1"}}})
	}},
	{"subscribe before server_up of its epoch", func(t *testing.T, newStore func(t *testing.T) store.PresenceStore) {
		s := newStore(t)
		apply(t, s, t0, up("s1", 1), sub("s1", 2, 100, true))
		checkUsers(t, s, at(time.Second), map[int64]user{100: {}})
		apply(t, s, t0, up("s1", 2))
		checkUsers(t, s, at(time.Second), map[int64]user{100: {true, []string{"s1"}}})
	}},
	{"rooms", func(t *testing.T, newStore func(t *testing.T) store.PresenceStore) {
		s := newStore(t)
		apply(t, s, t0, up("s1", 1), up("s2", 1), up("s3", 1), subRoom("s1", 1, 5), subRoom("s2", 1, 5), subRoom("s3", 1, 6))
		checkRoom(t, s, 5, at(time.Second), "s1", "s2")
		apply(t, s, t0, unsubRoom("s2", 1, 5), unsubRoom("s2", 1, 6))
		checkRoom(t, s, 5, at(time.Second), "s1")
		checkRoom(t, s, 6, at(time.Second), "s3")
		checkRoom(t, s, 7, at(time.Second))
	}},
	{"replaying events leaves the same state", func(t *testing.T, newStore func(t *testing.T) store.PresenceStore) {
		seq := []*schemas.Presence{
			up("s1", 1), up("s2", 1), sub("s1", 1, 100, true), sub("s2", 1, 100, false), sub("s1", 1, 101, true),
			subRoom("s1", 1, 5), unsub("s1", 1, 101), subRoom("s2", 1, 5), unsubRoom("s1", 1, 5), up("s2", 2),
			sub("s2", 2, 102, true), hb("s1", 1, at(10*time.Second)), down("s2", 2), up("s2", 3), sub("s2", 3, 100, true),
		}
		once, twice, each := newStore(t), newStore(t), newStore(t)
		apply(t, once, t0, seq...)
		apply(t, twice, t0, seq...)
		apply(t, twice, t0, seq...)
		for _, e := range seq { // every event applied twice in a row
			apply(t, each, t0, e, e)
		}
		for _, d := range []time.Duration{time.Second, 35 * time.Second, 41 * time.Second} {
			for name, s := range map[string]store.PresenceStore{"twice": twice, "each": each} {
				a, _ := once.Users(context.Background(), 7, []int64{100, 101, 102}, at(d))
				b, _ := s.Users(context.Background(), 7, []int64{100, 101, 102}, at(d))
				ra, _ := once.Room(context.Background(), 7, 5, at(d))
				rb, _ := s.Room(context.Background(), 7, 5, at(d))
				if fmt.Sprint(a, ra) != fmt.Sprint(b, rb) {
					t.Errorf("%s at +%s: %v %v, once: %v %v", name, d, b, rb, a, ra)
				}
			}
		}
		checkUsers(t, twice, at(time.Second), map[int64]user{100: {true, []string{"s1", "s2"}}, 101: {}, 102: {}})
	}},
	{"collect removes only stale entries", func(t *testing.T, newStore func(t *testing.T) store.PresenceStore) {
		s := newStore(t)
		c, ok := s.(store.Collector)
		if !ok {
			t.Skip("store does not collect")
		}
		apply(t, s, t0, up("s1", 1), up("s2", 1), sub("s1", 1, 100, true), sub("s2", 1, 101, true), subRoom("s1", 1, 5),
			up("s2", 2), sub("s2", 2, 102, true))
		st, err := c.Collect(context.Background(), at(time.Second))
		if err != nil || st != (store.CollectStats{Removed: 1, Users: 2, Rooms: 1}) { // s2's epoch-1 entry of user 101
			t.Fatalf("collect = %+v, %v; want 1 removed, users 100 and 102, room 5", st, err)
		}
		apply(t, s, at(40*time.Second), hb("s2", 2, at(40*time.Second)))
		st, err = c.Collect(context.Background(), at(2*Lease+time.Second)) // s1 dead for > a lease
		if err != nil || st != (store.CollectStats{Removed: 2, Users: 1}) {
			t.Fatalf("collect = %+v, %v; want 2 removed, user 102 left", st, err)
		}
		checkUsers(t, s, at(2*Lease+time.Second), map[int64]user{100: {}, 101: {}, 102: {true, []string{"s2"}}})
	}},
}
