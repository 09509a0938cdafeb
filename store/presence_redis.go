package store

import (
	"context"
	_ "embed"
	"fmt"
	"maps"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/imstream/imstream/internal/plumbing/redisx"
	"github.com/imstream/imstream/schemas"
)

// The scripts' bodies are the .lua files beside this one.
var (
	//go:embed apply_server_event.lua
	serverScript string
	//go:embed apply_subscriptions.lua
	subsScript string
	//go:embed delete_field_if.lua
	delIfScript string
	//go:embed zrem_if.lua
	zremIfScript string
)

// Scripts: each touches one key (one slot).
var (
	// KEYS[1] server hash; ARGV type, epoch, leaseUntil. Returns the
	// resulting lease (0 when down) or -1 when nothing changed.
	serverLua = redis.NewScript(serverScript)
	// KEYS user or room hashes, one per event, in event order; ARGV four
	// per event: op ('s' subscribe, 'u' unsubscribe), server, epoch, value.
	// A subscribe sets the server's field unless it holds a newer epoch; an
	// unsubscribe deletes it unless it holds a newer epoch. Several events
	// per call where the keys may share a call (one node); one on a Cluster.
	subsLua = redis.NewScript(subsScript)
	// KEYS[1] user or room hash; ARGV server, value: deletes the field if
	// it still holds value (garbage collection).
	delIfLua = redis.NewScript(delIfScript)
	// KEYS[1] an app index; ARGV member, score: removes the member if its
	// score is still that (garbage collection).
	zremIfLua = redis.NewScript(zremIfScript)

	// applyScripts are the scripts Apply calls by digest (EVALSHA).
	applyScripts = []*redis.Script{serverLua, subsLua}
)

// RedisPresence is the PresenceStore on Redis (layout in the package doc).
// Readers cache server states for at most Refresh, and read through when
// an entry names an epoch newer than the cached one.
type RedisPresence struct {
	c       redis.UniversalClient
	prefix  string
	lease   time.Duration
	refresh time.Duration

	mu    sync.Mutex
	cache map[string]cachedServer
	prog  cachedProgress
}

// cachedProgress is the presence processes' progress as last read.
type cachedProgress struct {
	entries []progressEntry
	fetched time.Time
}

type cachedServer struct {
	serverState
	fetched time.Time
}

var (
	_ PresenceStore    = (*RedisPresence)(nil)
	_ Collector        = (*RedisPresence)(nil)
	_ ProgressRecorder = (*RedisPresence)(nil)
)

// NewRedisPresence returns the store. lease is the lease a heartbeat grants;
// refresh bounds how stale a reader's view of server states may be (a
// server shut down cleanly may still get deliveries for that long; lease
// expiry is judged exactly).
func NewRedisPresence(c redis.UniversalClient, prefix string, lease, refresh time.Duration) *RedisPresence {
	return &RedisPresence{c: c, prefix: prefix, lease: lease, refresh: refresh, cache: map[string]cachedServer{}}
}

func (r *RedisPresence) serverKey(id string) string { return r.prefix + "srv:{" + id + "}" }
func (r *RedisPresence) serversKey() string         { return r.prefix + "servers" }
func (r *RedisPresence) progressKey() string        { return r.prefix + "progress" }

// AppKey returns the sorted set of servers a user of appid subscribed on,
// each scored with the latest epoch it did so in.
func (r *RedisPresence) AppKey(appid int64) string {
	return r.prefix + "a:{" + strconv.FormatInt(appid, 10) + "}"
}

// progressGone is how old a process's progress record must be before
// Progress deletes it (readers ignore it long before: ProgressForget).
const progressGone = time.Hour

// Progress implements ProgressRecorder: HSET <prefix>progress <process>
// "<through ms>:<now ms>", and records of processes gone for an hour are
// deleted.
func (r *RedisPresence) Progress(ctx context.Context, process string, through, now time.Time) error {
	key := r.progressKey()
	pipe := r.c.Pipeline()
	pipe.HSet(ctx, key, process, strconv.FormatInt(through.UnixMilli(), 10)+":"+strconv.FormatInt(now.UnixMilli(), 10))
	all := pipe.HGetAll(ctx, key)
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("presence: record progress: %w", err)
	}
	var gone []string
	for p, v := range all.Val() {
		if e, ok := parseProgress(v); ok && e.written < now.Add(-progressGone).UnixMilli() {
			gone = append(gone, p)
		}
	}
	if len(gone) > 0 {
		return r.c.HDel(ctx, key, gone...).Err()
	}
	return nil
}

func parseProgress(v string) (progressEntry, bool) {
	t, w, ok := strings.Cut(v, ":")
	through, err1 := strconv.ParseInt(t, 10, 64)
	written, err2 := strconv.ParseInt(w, 10, 64)
	return progressEntry{through, written}, ok && err1 == nil && err2 == nil
}

// JudgedAt implements PresenceStore.
func (r *RedisPresence) JudgedAt(ctx context.Context, now time.Time) (time.Time, error) {
	ms, err := r.at(ctx, now)
	return time.UnixMilli(ms), err
}

// at returns when leases are judged at now (judgedAt), reading the
// processes' progress at most every refresh.
func (r *RedisPresence) at(ctx context.Context, now time.Time) (int64, error) {
	r.mu.Lock()
	p := r.prog
	r.mu.Unlock()
	if p.fetched.IsZero() || now.Sub(p.fetched) >= r.refresh || now.Before(p.fetched) {
		all, err := r.c.HGetAll(ctx, r.progressKey()).Result()
		if err != nil {
			return 0, fmt.Errorf("presence: read progress: %w", err)
		}
		p = cachedProgress{fetched: now}
		for _, v := range all {
			if e, ok := parseProgress(v); ok {
				p.entries = append(p.entries, e)
			}
		}
		r.mu.Lock()
		r.prog = p
		r.mu.Unlock()
	}
	return judgedAt(p.entries, now.UnixMilli()), nil
}

// UserKey returns the hash key of a user.
func (r *RedisPresence) UserKey(appid, uid int64) string {
	return r.prefix + "u:{" + strconv.FormatInt(appid, 10) + ":" + strconv.FormatInt(uid, 10) + "}"
}

// RoomKey returns the hash key of a room.
func (r *RedisPresence) RoomKey(appid, room int64) string {
	return r.prefix + "r:{" + strconv.FormatInt(appid, 10) + ":" + strconv.FormatInt(room, 10) + "}"
}

// subsPerCall bounds the user and room events one script call applies on a
// single node (Redis runs nothing else meanwhile: ~1 ms).
const subsPerCall = 500

// Apply implements PresenceStore: one pipeline of scripts called by digest;
// server events one call each, user and room events up to subsPerCall per
// call (one per call on a Cluster), in event order.
func (r *RedisPresence) Apply(ctx context.Context, evs []*schemas.Presence, now time.Time) error {
	if len(evs) == 0 {
		return nil
	}
	type serverCmd struct {
		id  string
		cmd *redis.Cmd
	}
	var servers []serverCmd
	// On one node a call applies up to subsPerCall user and room events;
	// on a Cluster the keys of one call must share a slot, so one each.
	perCall := subsPerCall
	if _, cluster := r.c.(*redis.ClusterClient); cluster {
		perCall = 1
	}
	keys := make([]string, 0, min(len(evs), perCall))
	args := make([]any, 0, 4*cap(keys))
	err := redisx.ExecScripts(ctx, r.c, applyScripts, func(pipe redis.Pipeliner) {
		servers = servers[:0]
		keys, args = keys[:0], args[:0]
		flush := func() {
			if len(keys) > 0 {
				subsLua.EvalSha(ctx, pipe, keys, args...)
				keys, args = make([]string, 0, cap(keys)), make([]any, 0, cap(args))
			}
		}
		for _, ev := range evs {
			epoch := strconv.FormatInt(ev.Epoch, 10)
			switch ev.Type {
			case schemas.TypeServerUp, schemas.TypeHeartbeat, schemas.TypeServerDown:
				until := leaseStart(ev, now) + r.lease.Milliseconds()
				cmd := serverLua.EvalSha(ctx, pipe, []string{r.serverKey(ev.Server)}, string(ev.Type), epoch, until)
				servers = append(servers, serverCmd{ev.Server, cmd})
				continue
			case schemas.TypeSubscribe:
				online := "0"
				if ev.IsOnline() {
					online = "1"
				}
				keys, args = append(keys, r.UserKey(ev.AppID, ev.UID)), append(args, "s", ev.Server, epoch, epoch+":"+online)
			case schemas.TypeUnsubscribe:
				keys, args = append(keys, r.UserKey(ev.AppID, ev.UID)), append(args, "u", ev.Server, epoch, "")
			case schemas.TypeSubscribeRoom:
				keys, args = append(keys, r.RoomKey(ev.AppID, ev.RoomID)), append(args, "s", ev.Server, epoch, epoch)
			case schemas.TypeUnsubscribeRoom:
				keys, args = append(keys, r.RoomKey(ev.AppID, ev.RoomID)), append(args, "u", ev.Server, epoch, "")
			default:
				continue
			}
			if len(keys) == perCall {
				flush()
			}
		}
		flush()
		// The app index: ZADD GT keeps each server's latest epoch (a
		// separate slot per app; idempotent, so a replayed pipeline is
		// harmless).
		apps := map[int64][]redis.Z{}
		for _, ev := range evs {
			if ev.Type == schemas.TypeSubscribe {
				apps[ev.AppID] = append(apps[ev.AppID], redis.Z{Member: ev.Server, Score: float64(ev.Epoch)})
			}
		}
		for appid, zs := range apps {
			pipe.ZAddGT(ctx, r.AppKey(appid), zs...)
		}
	})
	if err != nil {
		return fmt.Errorf("presence: apply %d events: %w", len(evs), err)
	}
	// Index the servers whose lease changed (a separate slot).
	var zs []redis.Z
	for _, s := range servers {
		if v, _ := s.cmd.Int64(); v >= 0 {
			zs = append(zs, redis.Z{Member: s.id, Score: float64(v)})
		}
	}
	if len(zs) > 0 {
		if err := r.c.ZAddGT(ctx, r.serversKey(), zs...).Err(); err != nil {
			return fmt.Errorf("presence: index servers: %w", err)
		}
		// A clean shutdown lowers the score, which ZADD GT refuses.
		for _, z := range zs {
			if z.Score == 0 {
				if err := r.c.ZAdd(ctx, r.serversKey(), z).Err(); err != nil {
					return fmt.Errorf("presence: index servers: %w", err)
				}
			}
		}
	}
	return nil
}

// servers returns the states of ids, from the cache when it is fresh and
// not older than the epochs entries refer to (need[id]), else from Redis.
func (r *RedisPresence) servers(ctx context.Context, need map[string]int64, now time.Time) (map[string]serverState, error) {
	out := make(map[string]serverState, len(need))
	var fetch []string
	r.mu.Lock()
	for id, epoch := range need {
		c, ok := r.cache[id]
		if ok && now.Sub(c.fetched) < r.refresh && c.Epoch >= epoch {
			out[id] = c.serverState
			continue
		}
		fetch = append(fetch, id)
	}
	r.mu.Unlock()
	if len(fetch) == 0 {
		return out, nil
	}
	fresh, err := r.fetchServers(ctx, fetch, now)
	if err != nil {
		return nil, err
	}
	maps.Copy(out, fresh)
	return out, nil
}

// fetchServers reads the states of ids from Redis, into the cache too.
func (r *RedisPresence) fetchServers(ctx context.Context, ids []string, now time.Time) (map[string]serverState, error) {
	pipe := r.c.Pipeline()
	cmds := make([]*redis.SliceCmd, len(ids))
	for i, id := range ids {
		cmds[i] = pipe.HMGet(ctx, r.serverKey(id), "epoch", "lease", "down")
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("presence: read servers: %w", err)
	}
	out := make(map[string]serverState, len(ids))
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, id := range ids {
		v := cmds[i].Val()
		s := serverState{Epoch: toInt(v, 0), Lease: toInt(v, 1), Down: toInt(v, 2)}
		out[id] = s
		r.cache[id] = cachedServer{serverState: s, fetched: now}
	}
	return out, nil
}

func toInt(v []any, i int) int64 {
	if i >= len(v) {
		return 0
	}
	s, _ := v[i].(string)
	n, _ := strconv.ParseInt(s, 10, 64)
	return n
}

// parseEntry splits "<epoch>[:<online>]".
func parseEntry(v string) (epoch int64, online bool) {
	e, rest, _ := strings.Cut(v, ":")
	epoch, _ = strconv.ParseInt(e, 10, 64)
	return epoch, rest == "1"
}

// Users implements PresenceStore.
func (r *RedisPresence) Users(ctx context.Context, appid int64, uids []int64, now time.Time) ([]UserPresence, error) {
	hashes, err := r.hashes(ctx, len(uids), func(i int) string { return r.UserKey(appid, uids[i]) })
	if err != nil {
		return nil, err
	}
	states, err := r.servers(ctx, neededServers(hashes), now)
	if err != nil {
		return nil, err
	}
	ms, err := r.at(ctx, now)
	if err != nil {
		return nil, err
	}
	out := make([]UserPresence, len(uids))
	for i, h := range hashes {
		for srv, v := range h {
			epoch, online := parseEntry(v)
			if states[srv].valid(epoch, ms) {
				out[i].Servers = append(out[i].Servers, srv)
				out[i].Online = out[i].Online || online
			}
		}
		sort.Strings(out[i].Servers)
	}
	return out, nil
}

// AppServers implements PresenceStore: one ZRANGE of the app's index.
func (r *RedisPresence) AppServers(ctx context.Context, appid int64, now time.Time) ([]string, error) {
	zs, err := r.c.ZRangeWithScores(ctx, r.AppKey(appid), 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("presence: app servers: %w", err)
	}
	entries := make(map[string]int64, len(zs))
	for _, z := range zs {
		entries[z.Member.(string)] = int64(z.Score)
	}
	return r.counting(ctx, entries, now)
}

// counting returns, sorted, the servers of entries (server → the epoch an
// entry names) whose entry counts at now: the server live and the epoch
// its current one.
func (r *RedisPresence) counting(ctx context.Context, entries map[string]int64, now time.Time) ([]string, error) {
	states, err := r.servers(ctx, entries, now)
	if err != nil {
		return nil, err
	}
	ms, err := r.at(ctx, now)
	if err != nil {
		return nil, err
	}
	var out []string
	for srv, epoch := range entries {
		if states[srv].valid(epoch, ms) {
			out = append(out, srv)
		}
	}
	sort.Strings(out)
	return out, nil
}

// Room implements PresenceStore.
func (r *RedisPresence) Room(ctx context.Context, appid, room int64, now time.Time) ([]string, error) {
	hashes, err := r.hashes(ctx, 1, func(int) string { return r.RoomKey(appid, room) })
	if err != nil {
		return nil, err
	}
	entries := make(map[string]int64, len(hashes[0]))
	for srv, v := range hashes[0] {
		entries[srv], _ = parseEntry(v)
	}
	return r.counting(ctx, entries, now)
}

func (r *RedisPresence) hashes(ctx context.Context, n int, key func(int) string) ([]map[string]string, error) {
	pipe := r.c.Pipeline()
	cmds := make([]*redis.MapStringStringCmd, n)
	for i := range cmds {
		cmds[i] = pipe.HGetAll(ctx, key(i))
	}
	if n > 0 {
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, fmt.Errorf("presence: read %d hashes: %w", n, err)
		}
	}
	out := make([]map[string]string, n)
	for i, c := range cmds {
		out[i] = c.Val()
	}
	return out, nil
}

func neededServers(hashes []map[string]string) map[string]int64 {
	need := map[string]int64{}
	for _, h := range hashes {
		for srv, v := range h {
			if e, _ := parseEntry(v); e > need[srv] {
				need[srv] = e
			}
		}
	}
	return need
}

// LiveServers implements PresenceStore.
func (r *RedisPresence) LiveServers(ctx context.Context, now time.Time) ([]string, error) {
	ms, err := r.at(ctx, now)
	if err != nil {
		return nil, err
	}
	ids, err := r.c.ZRangeByScore(ctx, r.serversKey(), &redis.ZRangeBy{Min: "(" + strconv.FormatInt(ms, 10), Max: "+inf"}).Result()
	if err != nil {
		return nil, fmt.Errorf("presence: live servers: %w", err)
	}
	need := make(map[string]int64, len(ids))
	for _, id := range ids {
		need[id] = 0
	}
	states, err := r.servers(ctx, need, now)
	if err != nil {
		return nil, err
	}
	// The index says these are live, their cached state does not: a state
	// cached before the server (re)started (a user entry of it was read
	// before its server_up was applied) would leave a just-connected server
	// out for up to presence.server_cache. Read them again.
	var stale []string
	for _, id := range ids {
		if !states[id].live(ms) {
			stale = append(stale, id)
		}
	}
	if len(stale) > 0 {
		fresh, err := r.fetchServers(ctx, stale, now)
		if err != nil {
			return nil, err
		}
		maps.Copy(states, fresh)
	}
	var out []string
	for _, id := range ids {
		if states[id].live(ms) {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out, nil
}

// Collect implements Collector: it scans user and room hashes (SCAN, on
// every master of a cluster) and deletes entries of void epochs or of
// servers dead for longer than a lease, each with a compare-and-delete.
func (r *RedisPresence) Collect(ctx context.Context, now time.Time) (CollectStats, error) {
	var st CollectStats
	var mu sync.Mutex
	err := r.eachHash(ctx, func(ctx context.Context, _ *redis.Client, key string, user bool) error {
		n, left, err := r.collectKey(ctx, key, now)
		if err != nil {
			return err
		}
		mu.Lock()
		st.Removed += n
		if left > 0 && user {
			st.Users++
		} else if left > 0 {
			st.Rooms++
		}
		mu.Unlock()
		return nil
	})
	if err != nil {
		return st, err
	}
	return st, r.collectApps(ctx, now) // index entries, not users': not counted in Removed
}

// collectApps removes from the app indexes the servers whose entry is of a
// void epoch or that have been dead for longer than a lease, each with a
// compare-and-delete (a subscribe meanwhile raised the score: kept).
func (r *RedisPresence) collectApps(ctx context.Context, now time.Time) error {
	scan := func(ctx context.Context, c *redis.Client) error {
		iter := c.Scan(ctx, 0, r.prefix+"a:{*", 500).Iterator()
		for iter.Next(ctx) {
			key := iter.Val()
			zs, err := r.c.ZRangeWithScores(ctx, key, 0, -1).Result()
			if err != nil {
				return err
			}
			need := make(map[string]int64, len(zs))
			for _, z := range zs {
				need[z.Member.(string)] = int64(z.Score)
			}
			r.mu.Lock()
			for srv := range need {
				delete(r.cache, srv)
			}
			r.mu.Unlock()
			states, err := r.servers(ctx, need, now)
			if err != nil {
				return err
			}
			at, err := r.at(ctx, now)
			if err != nil {
				return err
			}
			cutoff := at - r.lease.Milliseconds()
			for srv, epoch := range need {
				if s := states[srv]; epoch < s.Epoch || (epoch == s.Epoch && !s.live(cutoff)) {
					if err := zremIfLua.Run(ctx, r.c, []string{key}, srv, epoch).Err(); err != nil {
						return err
					}
				}
			}
		}
		return iter.Err()
	}
	return r.eachMaster(ctx, scan)
}

// eachHash calls fn for every user hash and then every room hash (SCAN, on
// every master of a cluster, masters concurrently), with the node holding
// it; user tells which kind the key is.
func (r *RedisPresence) eachHash(ctx context.Context, fn func(ctx context.Context, node *redis.Client, key string, user bool) error) error {
	scan := func(ctx context.Context, c *redis.Client) error {
		for i, pattern := range []string{r.prefix + "u:{*", r.prefix + "r:{*"} {
			iter := c.Scan(ctx, 0, pattern, 500).Iterator()
			for iter.Next(ctx) {
				if err := fn(ctx, c, iter.Val(), i == 0); err != nil {
					return err
				}
			}
			if err := iter.Err(); err != nil {
				return err
			}
		}
		return nil
	}
	return r.eachMaster(ctx, scan)
}

// eachMaster calls scan with every master of a cluster (concurrently), or
// with the one server.
func (r *RedisPresence) eachMaster(ctx context.Context, scan func(ctx context.Context, c *redis.Client) error) error {
	switch c := r.c.(type) {
	case *redis.ClusterClient:
		return c.ForEachMaster(ctx, scan)
	case *redis.Client:
		return scan(ctx, c)
	}
	return fmt.Errorf("presence: unsupported client %T", r.c)
}

// collectKey removes the stale entries of one hash; it returns how many it
// removed and how many are left.
func (r *RedisPresence) collectKey(ctx context.Context, key string, now time.Time) (int, int, error) {
	h, err := r.c.HGetAll(ctx, key).Result()
	if err != nil {
		return 0, 0, err
	}
	// Judge with fresh server states, a lease ago.
	r.mu.Lock()
	for srv := range h {
		delete(r.cache, srv)
	}
	r.mu.Unlock()
	states, err := r.servers(ctx, neededServers([]map[string]string{h}), now)
	if err != nil {
		return 0, 0, err
	}
	at, err := r.at(ctx, now)
	if err != nil {
		return 0, 0, err
	}
	cutoff := at - r.lease.Milliseconds()
	n := 0
	for srv, v := range h {
		epoch, _ := parseEntry(v)
		s := states[srv]
		if epoch < s.Epoch || (epoch == s.Epoch && !s.live(cutoff)) {
			d, err := delIfLua.Run(ctx, r.c, []string{key}, srv, v).Int()
			if err != nil {
				return n, len(h) - n, err
			}
			n += d
		}
	}
	return n, len(h) - n, nil
}

// ResetServer is the operator's escape hatch for a server id whose state is
// unusable (e.g. poisoned by an epoch far in the future written before
// presence.epoch_skew existed): it deletes the server's lifecycle hash and
// its entries in every user and room hash (SCAN, on every master of a
// cluster). The server then counts as never seen: its next server_up, at
// any epoch, starts it afresh, and it must announce its users and rooms
// again (an IM server does so when it reconnects). It returns how many
// user and room entries it removed.
func (r *RedisPresence) ResetServer(ctx context.Context, id string) (int, error) {
	if err := r.c.Del(ctx, r.serverKey(id)).Err(); err != nil {
		return 0, fmt.Errorf("presence: reset %s: %w", id, err)
	}
	if err := r.c.ZRem(ctx, r.serversKey(), id).Err(); err != nil {
		return 0, fmt.Errorf("presence: reset %s: %w", id, err)
	}
	r.mu.Lock()
	delete(r.cache, id)
	r.mu.Unlock()
	var mu sync.Mutex
	removed := 0
	err := r.eachHash(ctx, func(ctx context.Context, node *redis.Client, key string, _ bool) error {
		n, err := node.HDel(ctx, key, id).Result()
		mu.Lock()
		removed += int(n)
		mu.Unlock()
		return err
	})
	if err != nil {
		return removed, fmt.Errorf("presence: reset %s: %w", id, err)
	}
	return removed, nil
}
