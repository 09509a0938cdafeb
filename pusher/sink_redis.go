package pusher

import (
	"context"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// appendScript appends the entries above the watermark and raises it, in one
// atomic step. KEYS[1] list, KEYS[2] watermark; ARGV offset/entry pairs in
// offset order. It returns the number of entries appended.
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

// RedisSink writes entries with RPUSH, one atomic script per list and batch,
// all lists of a batch in one pipeline. The watermark of list L and source
// partition P is the string key "<prefix>wm:{L}:<topic>:<P>": the hash tag
// puts it in L's slot, so every script touches one slot (Redis Cluster
// safe).
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
func (s *RedisSink) Append(ctx context.Context, topic string, partition int, entries []Entry) error {
	if len(entries) == 0 {
		return nil
	}
	// Group by list, keeping offset order within each list.
	order := make([]string, 0, 4)
	args := make(map[string][]any, 4)
	for _, e := range entries {
		a, ok := args[e.List]
		if !ok {
			order = append(order, e.List)
		}
		args[e.List] = append(a, e.Offset, e.Data)
	}
	pipe := s.Client.Pipeline()
	cmds := make([]*redis.Cmd, len(order))
	for i, list := range order {
		cmds[i] = appendLua.Eval(ctx, pipe, []string{list, s.WatermarkKey(list, topic, partition)}, args[list]...)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("pusher: append to %d lists: %w", len(order), err)
	}
	for i, c := range cmds {
		if err := c.Err(); err != nil {
			return fmt.Errorf("pusher: rpush %s: %w", order[i], err)
		}
	}
	return nil
}
