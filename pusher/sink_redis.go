package pusher

import (
	"context"
	_ "embed"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/imstream/imstream/internal/plumbing/config"
	"github.com/imstream/imstream/internal/plumbing/redisx"
)

// appendLua (append_above_watermark.lua) appends the entries above the watermark and raises it, in one
// atomic step. KEYS[1] list, KEYS[2] watermark, KEYS[3] the legacy
// watermark of the list and source partition (all apps), read when KEYS[2]
// does not exist yet; ARGV[1] the first and
// ARGV[2] the last position, ARGV[3] the watermark the call follows ("" for
// a stream's first call in a pipeline, else the previous call's last
// position), ARGV[4] every entry's position as one comma-separated string,
// ARGV[5..] the entries. Positions never decrease
// (groupByStream), so the entries above the watermark are a suffix: the
// script compares the last and the first position and reads the others only
// on a partial replay; a common batch is one RPUSH per 1000 entries and no
// per-entry Lua work (Redis turns every ARGV into a Lua string, so the
// positions travel as one). It returns the number of entries appended, or
// -1 without touching anything when the watermark is below ARGV[3]: the
// previous call of the pipeline was refused (Redis at maxmemory, a
// failover), and raising the watermark past its entries would make the
// retry skip them as repeats. Positions are exact up to 2^53 (source
// offsets below 2^37).
//
//go:embed append_above_watermark.lua
var appendScript string

var appendLua = redis.NewScript(appendScript)

// RedisSink writes entries with RPUSH, one atomic script per list, source
// partition and app, all of a batch in one pipeline. The watermark of list
// L, source partition (T, P) and app A is the string key
// "<prefix>wm:{L}:T:P:A" holding the highest position written: the hash
// tag puts it in L's slot, so every
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

// WatermarkKey returns the watermark key of list for a source partition
// and app.
func (s *RedisSink) WatermarkKey(list, topic string, partition int, app int64) string {
	return s.LegacyWatermarkKey(list, topic, partition) + ":" + strconv.FormatInt(app, 10)
}

// LegacyWatermarkKey is the watermark key of list for a source partition
// that releases before per-app watermarks wrote, for all apps: a stream's
// first append takes it as its watermark, so that a replay across the
// upgrade appends nothing twice.
func (s *RedisSink) LegacyWatermarkKey(list, topic string, partition int) string {
	return s.Prefix + "wm:{" + list + "}:" + topic + ":" + strconv.Itoa(partition)
}

// Append implements Sink.
func (s *RedisSink) Append(ctx context.Context, entries []Entry) error {
	if len(entries) == 0 {
		return nil
	}
	order, by := groupByStream(entries)
	calls := make([][]call, len(order))
	fill := func(pipe redis.Pipeliner, streams []int) {
		for _, i := range streams {
			k := order[i]
			calls[i] = calls[i][:0]
			legacy := s.LegacyWatermarkKey(k.list, k.topic, k.partition)
			keys := []string{k.list, legacy + ":" + strconv.FormatInt(k.app, 10), legacy} // KEYS[2] is WatermarkKey
			after := ""
			for _, es := range scriptRuns(by[k]) {
				args := make([]any, 4, 4+len(es))
				pos := make([]byte, 0, 16*len(es))
				for j, e := range es {
					if j > 0 {
						pos = append(pos, ',')
					}
					pos = strconv.AppendInt(pos, e.Pos, 10)
					args = append(args, e.Data)
				}
				args[0], args[1], args[2], args[3] = es[0].Pos, es[len(es)-1].Pos, after, pos
				after = strconv.FormatInt(es[len(es)-1].Pos, 10)
				calls[i] = append(calls[i], call{es, appendLua.EvalSha(ctx, pipe, keys, args...)})
			}
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
	for i, cs := range calls {
		for _, c := range cs {
			n, err := c.cmd.Int()
			if err != nil {
				return fmt.Errorf("pusher: rpush %s: %w", order[i].list, err)
			}
			// An earlier call of the stream had not taken effect when this one
			// ran: refused (then Exec failed too), or run later, as a Cluster
			// client does with a call it resends after a redirection.
			if n < 0 {
				return fmt.Errorf("pusher: rpush %s: positions %d..%d not written: an earlier part was refused", order[i].list, c.es[0].Pos, c.es[len(c.es)-1].Pos)
			}
			for _, e := range c.es[len(c.es)-min(n, len(c.es)):] { // the script appended the last n
				e.Written = true
			}
		}
	}
	return nil
}

// call is one script call: its entries and its reply.
type call struct {
	es  []*Entry
	cmd *redis.Cmd
}

// scriptBytes bounds the entries one script call appends: Redis runs
// nothing else while a script runs, so a big group's entries (36 MB for
// 20 messages to 100 000 members with 19-digit uids) go in several calls
// rather than one that would hold every other client for a second.
const scriptBytes = 256 << 10

// scriptRuns cuts one stream's entries into runs of at most scriptBytes of
// data, only between jobs (a job's entries share a position, and the
// watermark is raised per call: a job cut in two would lose its second
// part on a replay). Each run is atomic; their order is the entries'.
func scriptRuns(es []*Entry) [][]*Entry {
	var runs [][]*Entry
	start, size := 0, 0
	for j := 0; j < len(es); {
		k, job := j+1, len(es[j].Data) // the job es[j:k]
		for k < len(es) && es[k].Pos == es[j].Pos && es[k].Job == es[j].Job {
			job += len(es[k].Data)
			k++
		}
		if size > 0 && size+job > scriptBytes {
			runs = append(runs, es[start:j])
			start, size = j, 0
		}
		size += job
		j = k
	}
	return append(runs, es[start:])
}
