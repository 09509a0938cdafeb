package storetest

import (
	"context"
	"reflect"
	"testing"

	"github.com/imstream/imstream/schemas"
	"github.com/imstream/imstream/store"
)

func gev(typ schemas.Type, appid, gid int64, f func(*schemas.Group)) *schemas.Group {
	g := &schemas.Group{Header: schemas.Header{V: 1, Type: typ, Server: "backend", AppID: appid}, GroupID: gid}
	if f != nil {
		f(g)
	}
	return g
}

func member(typ schemas.Type, gid, uid int64) *schemas.Group {
	return gev(typ, 7, gid, func(g *schemas.Group) { g.UID = uid })
}

func group(t *testing.T, s store.GroupStore, appid, gid int64) *store.Group {
	t.Helper()
	g, err := s.Group(context.Background(), appid, gid)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func gapply(t *testing.T, s store.GroupStore, evs ...*schemas.Group) {
	t.Helper()
	if err := s.Apply(context.Background(), evs); err != nil {
		t.Fatal(err)
	}
}

// RunGroups runs the suite; newStore returns an empty store whose reads are
// never stale.
func RunGroups(t *testing.T, newStore func(t *testing.T) store.GroupStore) {
	create := gev(schemas.TypeGroupCreate, 7, 55, func(g *schemas.Group) { g.Members = []int64{3, 1, 2} })
	t.Run("create, add, remove, mute, upgrade", func(t *testing.T) {
		s := newStore(t)
		if g := group(t, s, 7, 55); g != nil {
			t.Fatalf("unknown group = %+v", g)
		}
		gapply(t, s, create)
		g := group(t, s, 7, 55)
		if g == nil || !reflect.DeepEqual(g.Members, []int64{1, 2, 3}) || g.Super {
			t.Fatalf("created group = %+v", g)
		}
		gapply(t, s, member(schemas.TypeGroupMemberAdd, 55, 4), member(schemas.TypeGroupMemberRemove, 55, 2),
			gev(schemas.TypeGroupMemberMute, 7, 55, func(g *schemas.Group) { g.UID, g.Mute = 3, true }),
			gev(schemas.TypeGroupUpgrade, 7, 55, func(g *schemas.Group) { g.Super = true }))
		g = group(t, s, 7, 55)
		if !reflect.DeepEqual(g.Members, []int64{1, 3, 4}) || !reflect.DeepEqual(g.Muted, []int64{3}) || !g.Super {
			t.Fatalf("group = %+v", g)
		}
		gapply(t, s, gev(schemas.TypeGroupMemberMute, 7, 55, func(g *schemas.Group) { g.UID = 3 }))
		if g = group(t, s, 7, 55); len(g.Muted) != 0 {
			t.Fatalf("unmute: %+v", g)
		}
	})
	t.Run("disband and recreate", func(t *testing.T) {
		s := newStore(t)
		gapply(t, s, create, gev(schemas.TypeGroupDisband, 7, 55, nil))
		if g := group(t, s, 7, 55); g != nil {
			t.Fatalf("disbanded group = %+v", g)
		}
		gapply(t, s, member(schemas.TypeGroupMemberAdd, 55, 9))
		if g := group(t, s, 7, 55); g == nil || !reflect.DeepEqual(g.Members, []int64{9}) {
			t.Fatalf("recreated group = %+v", g)
		}
	})
	t.Run("appids are separate", func(t *testing.T) {
		s := newStore(t)
		gapply(t, s, create)
		if g := group(t, s, 8, 55); g != nil {
			t.Fatalf("app 8 sees app 7's group: %+v", g)
		}
	})
	t.Run("replaying a suffix leaves the same state", func(t *testing.T) {
		seq := []*schemas.Group{create, member(schemas.TypeGroupMemberAdd, 55, 4), member(schemas.TypeGroupMemberRemove, 55, 1),
			member(schemas.TypeGroupMemberAdd, 55, 1), member(schemas.TypeGroupMemberRemove, 55, 4)}
		for from := range seq {
			s := newStore(t)
			gapply(t, s, seq...)
			gapply(t, s, seq[from:]...)
			if g := group(t, s, 7, 55); !reflect.DeepEqual(g.Members, []int64{1, 2, 3}) {
				t.Fatalf("replay from %d: %+v", from, g)
			}
		}
	})
}
