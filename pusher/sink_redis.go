package pusher

import (
	"context"
	_ "embed"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/imstream/imstream/internal/config"
	"github.com/imstream/imstream/internal/redisx"
)

// appendLua (append.lua) appends the entries above the watermark and raises it, in one
// atomic step. KEYS[1] list, KEYS[2] watermark; ARGV[1] the first and
// ARGV[2] the last position, ARGV[3] every entry's position as one
// comma-separated string, ARGV[4..] the entries. Positions never decrease
// (groupByStream), so the entries above the watermark are a suffix: the
// script compares the last and the first position and reads the others only
// on a partial replay; a common batch is one RPUSH per 1000 entries and no
// per-entry Lua work (Redis turns every ARGV into a Lua string, so the
// positions travel as one). It returns the number of entries appended.
// Positions are exact up to 2^53 (source offsets below 2^37).
//
//go:embed append.lua
var appendScript string

var appendLua = redis.NewScript(appendScript)

// RedisSink writes entries with RPUSH, one atomic script per list and source
// partition, all of a batch in one pipeline. The watermark of list L and
// source partition (T, P) is the string key "<prefix>wm:{L}:T:P" holding the
// highest position written: the hash tag puts it in L's slot, so every
// script touches one slot (Redis Cluster safe).
type RedisSink struct {
	Client redis.UniversalClient
	Prefix string // e.g. "imstream:"
	// WaitReplicas, when > 0, makes Append wait (WAIT) until that many
	// replicas of every master it wrote to acknowledged the writes, within
	// WaitTimeout; fewer is an error (the batch is retried, its offsets not
	// committed). A master that crashes after acknowledging then loses
	// nothing the pusher committed.
	WaitReplicas int
	WaitTimeout  time.Duration
}

// NewRedisSink is the sink the redis section describes: its key prefix and
// replica acknowledgement.
func NewRedisSink(rc redis.UniversalClient, cfg config.Redis) *RedisSink {
	return &RedisSink{Client: rc, Prefix: cfg.KeyPrefix, WaitReplicas: cfg.WaitReplicas, WaitTimeout: cfg.WaitTimeout}
}

// appendAndWait runs the scripts of each master on one connection followed
// by WAIT there (WAIT counts the writes of its own connection): per master
// of a Cluster, or on the one server.
func (s *RedisSink) appendAndWait(ctx context.Context, order []stream, fill func(redis.Pipeliner, []int)) error {
	nodes := map[*redis.Client][]int{}
	switch c := s.Client.(type) {
	case *redis.ClusterClient:
		for i, k := range order {
			m, err := c.MasterForKey(ctx, k.list)
			if err != nil {
				return err
			}
			nodes[m] = append(nodes[m], i)
		}
	case *redis.Client:
		all := make([]int, len(order))
		for i := range all {
			all[i] = i
		}
		nodes[c] = all
	default:
		return fmt.Errorf("redis.wait_replicas: unsupported client %T", s.Client)
	}
	timeout := max(s.WaitTimeout, time.Millisecond)
	for node, streams := range nodes {
		var wait *redis.Cmd
		err := redisx.ExecScripts(ctx, node, []*redis.Script{appendLua}, func(pipe redis.Pipeliner) {
			fill(pipe, streams)
			wait = pipe.Do(ctx, "WAIT", s.WaitReplicas, timeout.Milliseconds())
		})
		if err != nil {
			return err
		}
		if n, _ := wait.Int64(); n < int64(s.WaitReplicas) {
			return fmt.Errorf("WAIT: %d of %d replicas of %s acknowledged within %s", n, s.WaitReplicas, node.Options().Addr, timeout)
		}
	}
	return nil
}

var _ Sink = (*RedisSink)(nil)

// WatermarkKey returns the watermark key of list for a source partition.
func (s *RedisSink) WatermarkKey(list, topic string, partition int) string {
	return s.Prefix + "wm:{" + list + "}:" + topic + ":" + strconv.Itoa(partition)
}

// Append implements Sink.
func (s *RedisSink) Append(ctx context.Context, entries []Entry) error {
	if len(entries) == 0 {
		return nil
	}
	order, by := groupByStream(entries)
	cmds := make([]*redis.Cmd, len(order))
	fill := func(pipe redis.Pipeliner, streams []int) {
		for _, i := range streams {
			k := order[i]
			es := by[k]
			args := make([]any, 3, 3+len(es))
			pos := make([]byte, 0, 16*len(es))
			for j, e := range es {
				if j > 0 {
					pos = append(pos, ',')
				}
				pos = strconv.AppendInt(pos, e.Pos, 10)
				args = append(args, e.Data)
			}
			args[0], args[1], args[2] = es[0].Pos, es[len(es)-1].Pos, pos
			cmds[i] = appendLua.EvalSha(ctx, pipe, []string{k.list, s.WatermarkKey(k.list, k.topic, k.partition)}, args...)
		}
	}
	var err error
	if s.WaitReplicas > 0 {
		err = s.appendAndWait(ctx, order, fill)
	} else {
		all := make([]int, len(order))
		for i := range all {
			all[i] = i
		}
		err = redisx.ExecScripts(ctx, s.Client, []*redis.Script{appendLua}, func(pipe redis.Pipeliner) { fill(pipe, all) })
	}
	if err != nil {
		return fmt.Errorf("pusher: append to %d lists: %w", len(order), err)
	}
	for i := range entries {
		entries[i].Written = false
	}
	for i, c := range cmds {
		n, err := c.Int()
		if err != nil {
			return fmt.Errorf("pusher: rpush %s: %w", order[i].list, err)
		}
		es := by[order[i]] // the script appended the last n
		for _, e := range es[len(es)-min(n, len(es)):] {
			e.Written = true
		}
	}
	return nil
}
