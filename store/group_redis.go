package store

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/imstream/imstream/schemas"
)

// RedisGroups is the GroupStore on Redis (layout in the package doc). Reads
// go through an in-process cache: a cached group is served for up to
// Fresh without a round trip; after that one HGET of its version decides
// whether the member set must be read again. A 10 000-member group thus
// costs no round trip per message while fresh, and one small one after.
type RedisGroups struct {
	c      redis.UniversalClient
	prefix string
	fresh  time.Duration

	mu    sync.Mutex
	cache map[userKey]cachedGroup
}

type cachedGroup struct {
	g       *Group // nil: unknown group
	ver     string
	checked time.Time
}

var _ GroupStore = (*RedisGroups)(nil)

// NewRedisGroups returns the store; fresh is how long a cached group is
// served without checking its version (0: check on every read).
func NewRedisGroups(c redis.UniversalClient, prefix string, fresh time.Duration) *RedisGroups {
	return &RedisGroups{c: c, prefix: prefix, fresh: fresh, cache: map[userKey]cachedGroup{}}
}

// GroupKey returns the hash key of a group; its member set is GroupKey+":m"
// and its muted set GroupKey+":x".
func (r *RedisGroups) GroupKey(appid, gid int64) string {
	return r.prefix + "g:{" + strconv.FormatInt(appid, 10) + ":" + strconv.FormatInt(gid, 10) + "}"
}

// Apply implements GroupStore: each event is one MULTI/EXEC on the group's
// slot.
func (r *RedisGroups) Apply(ctx context.Context, evs []*schemas.Group) error {
	if len(evs) == 0 {
		return nil
	}
	_, err := r.c.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
		for _, ev := range evs {
			k := r.GroupKey(ev.AppID, ev.GroupID)
			members, muted := k+":m", k+":x"
			// The hash outlives a disband (its ver keeps counting), so a
			// cached version can never match a recreated group by chance.
			if ev.Type == schemas.TypeGroupDisband {
				pipe.Del(ctx, members, muted)
				pipe.HSet(ctx, k, "disbanded", "1")
			} else {
				pipe.HDel(ctx, k, "disbanded")
			}
			switch ev.Type {
			case schemas.TypeGroupCreate:
				pipe.HSet(ctx, k, "super", boolStr(ev.Super))
				if len(ev.Members) > 0 {
					args := make([]any, len(ev.Members))
					for i, m := range ev.Members {
						args[i] = m
					}
					pipe.SAdd(ctx, members, args...)
				}
			case schemas.TypeGroupUpgrade:
				pipe.HSet(ctx, k, "super", boolStr(ev.Super))
			case schemas.TypeGroupMemberAdd:
				pipe.SAdd(ctx, members, ev.UID)
			case schemas.TypeGroupMemberRemove:
				pipe.SRem(ctx, members, ev.UID)
				pipe.SRem(ctx, muted, ev.UID)
			case schemas.TypeGroupMemberMute:
				if ev.Mute {
					pipe.SAdd(ctx, muted, ev.UID)
				} else {
					pipe.SRem(ctx, muted, ev.UID)
				}
			}
			pipe.HIncrBy(ctx, k, "ver", 1)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("groups: apply %d events: %w", len(evs), err)
	}
	return nil
}

func boolStr(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// Group implements GroupStore.
func (r *RedisGroups) Group(ctx context.Context, appid, gid int64) (*Group, error) {
	k := userKey{appid, gid}
	now := time.Now()
	r.mu.Lock()
	c, ok := r.cache[k]
	r.mu.Unlock()
	if ok && now.Sub(c.checked) < r.fresh {
		return c.g, nil
	}
	key := r.GroupKey(appid, gid)
	ver, err := r.c.HGet(ctx, key, "ver").Result()
	if err == redis.Nil {
		ver, err = "", nil
	}
	if err != nil {
		return nil, fmt.Errorf("groups: read %s: %w", key, err)
	}
	if ok && ver == c.ver {
		c.checked = now
	} else if c, err = r.load(ctx, appid, gid); err != nil {
		return nil, err
	}
	c.checked = now
	r.mu.Lock()
	r.cache[k] = c
	r.mu.Unlock()
	return c.g, nil
}

func (r *RedisGroups) load(ctx context.Context, appid, gid int64) (cachedGroup, error) {
	key := r.GroupKey(appid, gid)
	var meta *redis.MapStringStringCmd
	var members, muted *redis.StringSliceCmd
	_, err := r.c.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
		meta = pipe.HGetAll(ctx, key)
		members = pipe.SMembers(ctx, key+":m")
		muted = pipe.SMembers(ctx, key+":x")
		return nil
	})
	if err != nil {
		return cachedGroup{}, fmt.Errorf("groups: load %s: %w", key, err)
	}
	m := meta.Val()
	if len(m) == 0 || m["disbanded"] == "1" {
		return cachedGroup{ver: m["ver"]}, nil
	}
	return cachedGroup{ver: m["ver"], g: &Group{
		AppID: appid, ID: gid, Super: m["super"] == "1",
		Members: sortedInts(members.Val()), Muted: sortedInts(muted.Val()),
	}}, nil
}

func sortedInts(ss []string) []int64 {
	out := make([]int64, 0, len(ss))
	for _, s := range ss {
		if v, err := strconv.ParseInt(s, 10, 64); err == nil {
			out = append(out, v)
		}
	}
	slices.Sort(out)
	return out
}
