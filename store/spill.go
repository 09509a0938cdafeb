package store

import (
	"context"
	_ "embed"
	"fmt"
	"maps"
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/imstream/imstream/internal/plumbing/redisx"
)

// SpillStore keeps fair share's two marks per app and source partition
// (a stream: "<appid>:<topic>@<inc>:<partition>"): held, the highest source
// offset the fanout may have written to the spill topic, recorded before it
// writes; and drained, the highest source offset routed from the spill
// topic. An app is held back on a partition while held > drained.
type SpillStore interface {
	// Hold raises the held marks of the streams named.
	Hold(ctx context.Context, held map[string]int64) error
	// Drain sets the drained marks of the streams named.
	Drain(ctx context.Context, drained map[string]int64) error
	// Marks returns the held and drained marks of streams, -1 where none.
	Marks(ctx context.Context, streams []string) (held, drained []int64, err error)
	// Take takes tokens from quota buckets shared by every process, all in
	// one round trip, and returns what each request was granted.
	Take(ctx context.Context, reqs []QuotaTake) ([]QuotaGrant, error)
}

// QuotaTake asks a token bucket (an app's quota on one lane: rate tokens a
// second, at most depth saved) for N tokens: Reserve grants all N, going
// into debt that later requests wait out; else what is there is granted.
type QuotaTake struct {
	Bucket      string
	Rate, Depth float64
	N           int
	Reserve     bool
}

// QuotaGrant is a QuotaTake's answer: tokens granted, and how long until
// the bucket's debt is paid.
type QuotaGrant struct {
	Granted int
	Wait    time.Duration
}

// QuotaBucket names an app's quota bucket on a lane.
func QuotaBucket(appid int64, lane string) string {
	return "{" + strconv.FormatInt(appid, 10) + "}:" + lane
}

// SpillStream names one app's records of one source partition.
func SpillStream(appid int64, topic, inc string, partition int) string {
	b := strconv.AppendInt(make([]byte, 0, 48), appid, 10)
	b = append(b, ':')
	b = append(b, topic...)
	if inc != "" {
		b = append(b, '@')
		b = append(b, inc...)
	}
	b = append(b, ':')
	return string(strconv.AppendInt(b, int64(partition), 10))
}

//go:embed quota_take.lua
var quotaTakeScript string

var quotaTakeLua = redis.NewScript(quotaTakeScript)

// RedisSpill is SpillStore in two hashes, "<prefix>spill:held" and
// "<prefix>spill:drained", one field per stream, and quota buckets as
// hashes "<prefix>quota:{<appid>}:<lane>" (tokens, ms), each kept for a
// minute after it was last full.
type RedisSpill struct {
	c      redis.UniversalClient
	prefix string
}

// NewRedisSpill returns the store under prefix (redis.key_prefix).
func NewRedisSpill(c redis.UniversalClient, prefix string) *RedisSpill {
	return &RedisSpill{c: c, prefix: prefix}
}

func (s *RedisSpill) set(ctx context.Context, key string, marks map[string]int64) error {
	if len(marks) == 0 {
		return nil
	}
	args := make([]any, 0, 2*len(marks))
	for k, v := range marks {
		args = append(args, k, v)
	}
	return s.c.HSet(ctx, s.prefix+key, args...).Err()
}

// Hold implements SpillStore. Only the fanout that owns a source partition
// writes its held marks, in increasing order, so a plain HSET raises them.
func (s *RedisSpill) Hold(ctx context.Context, held map[string]int64) error {
	return s.set(ctx, "spill:held", held)
}

// Drain implements SpillStore.
func (s *RedisSpill) Drain(ctx context.Context, drained map[string]int64) error {
	return s.set(ctx, "spill:drained", drained)
}

// Marks implements SpillStore, in one round trip.
func (s *RedisSpill) Marks(ctx context.Context, streams []string) (held, drained []int64, err error) {
	if len(streams) == 0 {
		return nil, nil, nil
	}
	pipe := s.c.Pipeline()
	h := pipe.HMGet(ctx, s.prefix+"spill:held", streams...)
	d := pipe.HMGet(ctx, s.prefix+"spill:drained", streams...)
	if _, err := pipe.Exec(ctx); err != nil && err != redis.Nil {
		return nil, nil, err
	}
	if held, err = marks(h.Val()); err != nil {
		return nil, nil, err
	}
	if drained, err = marks(d.Val()); err != nil {
		return nil, nil, err
	}
	return held, drained, nil
}

// Take implements SpillStore: one script call per request, in one
// pipeline; the buckets refill by the Redis server's clock.
func (s *RedisSpill) Take(ctx context.Context, reqs []QuotaTake) ([]QuotaGrant, error) {
	if len(reqs) == 0 {
		return nil, nil
	}
	cmds := make([]*redis.Cmd, len(reqs))
	err := redisx.ExecScripts(ctx, s.c, []*redis.Script{quotaTakeLua}, func(pipe redis.Pipeliner) {
		for i, r := range reqs {
			mode := "take"
			if r.Reserve {
				mode = "reserve"
			}
			cmds[i] = quotaTakeLua.EvalSha(ctx, pipe, []string{s.prefix + "quota:" + r.Bucket}, r.Rate, r.Depth, r.N, mode)
		}
	})
	if err != nil {
		return nil, err
	}
	out := make([]QuotaGrant, len(reqs))
	for i, c := range cmds {
		v, err := c.Int64Slice()
		if err != nil || len(v) != 2 {
			return nil, fmt.Errorf("quota %s: %v", reqs[i].Bucket, err)
		}
		out[i] = QuotaGrant{Granted: int(v[0]), Wait: time.Duration(v[1]) * time.Millisecond}
	}
	return out, nil
}

func marks(vals []any) ([]int64, error) {
	out := make([]int64, len(vals))
	for i, v := range vals {
		out[i] = -1
		if s, ok := v.(string); ok {
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				return nil, err
			}
			out[i] = n
		}
	}
	return out, nil
}

// MemorySpill is SpillStore in memory, for tests; its quota buckets refill
// by Now.
type MemorySpill struct {
	Now func() time.Time

	mu            sync.Mutex
	held, drained map[string]int64
	buckets       map[string]*memBucket
}

type memBucket struct {
	tokens float64
	last   time.Time
}

// NewMemorySpill returns an empty store.
func NewMemorySpill() *MemorySpill {
	return &MemorySpill{Now: time.Now, held: map[string]int64{}, drained: map[string]int64{}, buckets: map[string]*memBucket{}}
}

// Take implements SpillStore, as the Redis script does.
func (s *MemorySpill) Take(_ context.Context, reqs []QuotaTake) ([]QuotaGrant, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.Now()
	out := make([]QuotaGrant, len(reqs))
	for i, r := range reqs {
		b := s.buckets[r.Bucket]
		if b == nil {
			b = &memBucket{tokens: r.Depth, last: now}
			s.buckets[r.Bucket] = b
		}
		if d := now.Sub(b.last).Seconds(); d > 0 {
			b.tokens = math.Min(r.Depth, b.tokens+d*r.Rate)
		}
		b.last = now
		if r.Reserve {
			b.tokens -= float64(r.N)
			out[i].Granted = r.N
			if b.tokens < 0 {
				out[i].Wait = time.Duration(math.Ceil(-b.tokens*1000/r.Rate)) * time.Millisecond
			}
			continue
		}
		g := max(0, min(r.N, int(math.Floor(b.tokens))))
		b.tokens -= float64(g)
		out[i].Granted = g
	}
	return out, nil
}

// Hold implements SpillStore.
func (s *MemorySpill) Hold(_ context.Context, held map[string]int64) error {
	s.set(s.held, held)
	return nil
}

// Drain implements SpillStore.
func (s *MemorySpill) Drain(_ context.Context, drained map[string]int64) error {
	s.set(s.drained, drained)
	return nil
}

func (s *MemorySpill) set(into, marks map[string]int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	maps.Copy(into, marks)
}

// Marks implements SpillStore.
func (s *MemorySpill) Marks(_ context.Context, streams []string) (held, drained []int64, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range streams {
		held = append(held, mark(s.held, k))
		drained = append(drained, mark(s.drained, k))
	}
	return held, drained, nil
}

func mark(m map[string]int64, k string) int64 {
	if v, ok := m[k]; ok {
		return v
	}
	return -1
}
