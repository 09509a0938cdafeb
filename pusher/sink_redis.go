package pusher

import (
	"context"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/imstream/imstream/internal/redisx"
)

// appendScript appends the entries above the watermark and raises it, in one
// atomic step. KEYS[1] list, KEYS[2] watermark; ARGV position/entry pairs in
// position order. It returns the number of entries appended. Positions are
// exact up to 2^53 (source offsets below 2^37).
const appendScript = `
local wm = tonumber(redis.call('GET', KEYS[2]) or '-1')
local hi = wm
local buf = {}
for i = 1, #ARGV, 2 do
  local off = tonumber(ARGV[i])
  if off > wm then
    buf[#buf + 1] = ARGV[i + 1]
    if off > hi then hi = off end
  end
end
for i = 1, #buf, 1000 do
  redis.call('RPUSH', KEYS[1], unpack(buf, i, math.min(i + 999, #buf)))
end
if hi > wm then redis.call('SET', KEYS[2], string.format('%d', hi)) end
return #buf
`

var appendLua = redis.NewScript(appendScript)

// RedisSink writes entries with RPUSH, one atomic script per list and source
// partition, all of a batch in one pipeline. The watermark of list L and
// source partition (T, P) is the string key "<prefix>wm:{L}:T:P" holding the
// highest position written: the hash tag puts it in L's slot, so every
// script touches one slot (Redis Cluster safe).
type RedisSink struct {
	Client redis.UniversalClient
	Prefix string // e.g. "imstream:"
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
	err := redisx.ExecScripts(ctx, s.Client, []*redis.Script{appendLua}, func(pipe redis.Pipeliner) {
		for i, k := range order {
			es := by[k]
			args := make([]any, 0, 2*len(es))
			for _, e := range es {
				args = append(args, e.Pos, e.Data)
			}
			cmds[i] = appendLua.EvalSha(ctx, pipe, []string{k.list, s.WatermarkKey(k.list, k.topic, k.partition)}, args...)
		}
	})
	if err != nil {
		return fmt.Errorf("pusher: append to %d lists: %w", len(order), err)
	}
	for i, c := range cmds {
		if err := c.Err(); err != nil {
			return fmt.Errorf("pusher: rpush %s: %w", order[i].list, err)
		}
	}
	return nil
}
