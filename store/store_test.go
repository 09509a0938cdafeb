package store_test

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/imstream/imstream/internal/tools/embedded"
	"github.com/imstream/imstream/internal/tools/testkit"
	"github.com/imstream/imstream/schemas"
	"github.com/imstream/imstream/store"
	"github.com/imstream/imstream/store/storetest"
)

func TestMemoryPresence(t *testing.T) {
	storetest.RunPresence(t, func(*testing.T) store.PresenceStore { return store.NewMemoryPresence(storetest.Lease) })
}

func TestMemoryGroups(t *testing.T) {
	storetest.RunGroups(t, func(*testing.T) store.GroupStore { return store.NewMemoryGroups() })
}

func TestRedisPresence(t *testing.T) {
	r := testkit.Redis(t, embedded.RedisOptions{})
	rc := testkit.RedisClient(t, r.Addr)
	storetest.RunPresence(t, func(t *testing.T) store.PresenceStore {
		rc.FlushAll(context.Background())
		return store.NewRedisPresence(rc, "imstream:", storetest.Lease, 0)
	})
}

func TestRedisGroups(t *testing.T) {
	r := testkit.Redis(t, embedded.RedisOptions{})
	rc := testkit.RedisClient(t, r.Addr)
	storetest.RunGroups(t, func(t *testing.T) store.GroupStore {
		rc.FlushAll(context.Background())
		return store.NewRedisGroups(rc, "imstream:", 0)
	})
}

// TestRedisGroupsCache: a cached group is served without a round trip
// while fresh, and picks up changes by version afterwards.
func TestRedisGroupsCache(t *testing.T) {
	r := testkit.Redis(t, embedded.RedisOptions{})
	rc := testkit.RedisClient(t, r.Addr)
	ctx := context.Background()
	writer := store.NewRedisGroups(rc, "imstream:", 0)
	reader := store.NewRedisGroups(rc, "imstream:", 200*time.Millisecond)
	ev := func(typ schemas.Type, uid int64) *schemas.Group {
		return &schemas.Group{Header: schemas.Header{V: 1, Type: typ, Server: "b", AppID: 7}, GroupID: 1, UID: uid}
	}
	_ = writer.Apply(ctx, []*schemas.Group{ev(schemas.TypeGroupMemberAdd, 1)})
	g, _ := reader.Group(ctx, 7, 1)
	_ = writer.Apply(ctx, []*schemas.Group{ev(schemas.TypeGroupMemberAdd, 2)})
	if g2, _ := reader.Group(ctx, 7, 1); g2 != g {
		t.Fatalf("fresh cache entry not served")
	}
	time.Sleep(250 * time.Millisecond)
	if g3, _ := reader.Group(ctx, 7, 1); !reflect.DeepEqual(g3.Members, []int64{1, 2}) {
		t.Fatalf("stale cache after version change: %+v", g3)
	}
}

// TestUsersBy: presence read in pipelines of n users is the same, in the
// same order, as one pipeline, whatever n.
func TestUsersBy(t *testing.T) {
	ctx := context.Background()
	s := store.NewMemoryPresence(30 * time.Second)
	now := time.Now()
	on := true
	evs := []*schemas.Presence{{Header: schemas.Header{V: 1, Type: schemas.TypeServerUp, Server: "s1", AppID: 7, TS: now.UnixMilli()}, Epoch: 1}}
	for _, uid := range []int64{2, 5} {
		evs = append(evs, &schemas.Presence{Header: schemas.Header{V: 1, Type: schemas.TypeSubscribe, Server: "s1", AppID: 7}, Epoch: 1, UID: uid, Online: &on})
	}
	if err := s.Apply(ctx, evs, now); err != nil {
		t.Fatal(err)
	}
	uids := []int64{1, 2, 3, 4, 5}
	want, err := s.Users(ctx, 7, uids, now)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{0, 1, 2, 5, 9} {
		got, err := store.UsersBy(ctx, s, 7, uids, now, n)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("n=%d: %v (%v), want %v", n, got, err, want)
		}
	}
}

// TestRedisPresencePartialPipeline: presence writes have no watermark a
// later call could raise past a refused one: each script only moves its
// keys' epochs forward, and a failed batch is applied again whole, in
// order. So when Redis refuses one call of Apply's pipeline and accepts
// the next (a failover, a write refused at maxmemory), the retry ends in
// the state one clean Apply gives — here 1 200 subscriptions and
// unsubscriptions over three calls, the middle one refused.
func TestRedisPresencePartialPipeline(t *testing.T) {
	r := testkit.Redis(t, embedded.RedisOptions{})
	ctx := context.Background()
	now := time.Now()
	yes := true
	ev := func(typ schemas.Type, uid int64) *schemas.Presence {
		p := &schemas.Presence{Header: schemas.Header{V: 1, Type: typ, Server: "s1", AppID: 7}, Epoch: 1, UID: uid}
		if typ == schemas.TypeSubscribe {
			p.Online = &yes
		}
		return p
	}
	evs := []*schemas.Presence{{Header: schemas.Header{V: 1, Type: schemas.TypeServerUp, Server: "s1", AppID: 7, TS: now.UnixMilli()}, Epoch: 1}}
	for uid := int64(1); uid <= 600; uid++ { // users 1..600 subscribe, 1..590 leave: 591..600 stay
		evs = append(evs, ev(schemas.TypeSubscribe, uid))
	}
	for uid := int64(1); uid <= 590; uid++ {
		evs = append(evs, ev(schemas.TypeUnsubscribe, uid))
	}
	uids := make([]int64, 600)
	for i := range uids {
		uids[i] = int64(i + 1)
	}
	online := func(ps store.PresenceStore) []bool {
		us, err := ps.Users(ctx, 7, uids, now)
		if err != nil {
			t.Fatal(err)
		}
		out := make([]bool, len(us))
		for i, u := range us {
			out[i] = u.Online
		}
		return out
	}
	clean := store.NewRedisPresence(testkit.RedisClient(t, r.Addr), "clean:", storetest.Lease, 0)
	if err := clean.Apply(ctx, evs, now); err != nil {
		t.Fatal(err)
	}
	struck := testkit.RedisClient(t, r.Addr)
	hook := &testkit.Strike{Calls: 3, Refuse: 2, After: -1} // server_up, then two calls of up to 500 events, …
	struck.AddHook(hook)
	ps := store.NewRedisPresence(struck, "imstream:", storetest.Lease, 0)
	if err := ps.Apply(ctx, evs, now); err == nil || !hook.Struck() {
		t.Fatalf("Apply with a call refused: %v (struck %v), want an error", err, hook.Struck())
	}
	if err := ps.Apply(ctx, evs, now); err != nil { // the batch's retry
		t.Fatal(err)
	}
	got, want := online(ps), online(clean)
	for i := range want {
		if got[i] != want[i] || want[i] != (uids[i] > 590) {
			t.Fatalf("user %d: online %v after the retry, %v after one clean Apply (want %v)", uids[i], got[i], want[i], uids[i] > 590)
		}
	}
}

// TestRedisPresenceLiveServersNotStale: a reader with a server cache that
// read a server's state before the server started (a subscription of it
// applied before its server_up) still counts the server live as soon as
// its server_up is applied, not one cache period later: imr's rules send
// a group message to every live server, and a just-connected IM server
// left out never gets it.
func TestRedisPresenceLiveServersNotStale(t *testing.T) {
	r := testkit.Redis(t, embedded.RedisOptions{})
	rc := testkit.RedisClient(t, r.Addr)
	ctx := context.Background()
	now := time.Now()
	writer := store.NewRedisPresence(rc, "imstream:", time.Minute, 0)
	reader := store.NewRedisPresence(rc, "imstream:", time.Minute, time.Hour) // a cache that never expires here
	yes := true
	sub := &schemas.Presence{Header: schemas.Header{V: 1, Type: schemas.TypeSubscribe, Server: "b", AppID: 7}, Epoch: 5, UID: 1, Online: &yes}
	if err := writer.Apply(ctx, []*schemas.Presence{sub}, now); err != nil {
		t.Fatal(err)
	}
	if us, err := reader.Users(ctx, 7, []int64{1}, now); err != nil || us[0].Online {
		t.Fatalf("user 1 before its server started: %+v, %v; want offline", us, err)
	}
	up := &schemas.Presence{Header: schemas.Header{V: 1, Type: schemas.TypeServerUp, Server: "b", AppID: 7, TS: now.UnixMilli()}, Epoch: 5}
	if err := writer.Apply(ctx, []*schemas.Presence{up}, now); err != nil {
		t.Fatal(err)
	}
	live, err := reader.LiveServers(ctx, now)
	if err != nil || len(live) != 1 || live[0] != "b" {
		t.Fatalf("live servers %v (%v), want [b]", live, err)
	}
}
