package pusher

import (
	"context"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/imstream/imstream/internal/redisx"
)

// appendScript appends the entries above the watermark and raises it, in one
// atomic step. KEYS[1] list, KEYS[2] watermark; ARGV[1] the first and
// ARGV[2] the last position, ARGV[3] every entry's position as one
// comma-separated string, ARGV[4..] the entries. Positions never decrease
// (groupByStream), so the entries above the watermark are a suffix: the
// script compares the last and the first position and reads the others only
// on a partial replay; a common batch is one RPUSH per 1000 entries and no
// per-entry Lua work (Redis turns every ARGV into a Lua string, so the
// positions travel as one). It returns the number of entries appended.
// Positions are exact up to 2^53 (source offsets below 2^37).
const appendScript = `
local wm = tonumber(redis.call('GET', KEYS[2]) or '-1')
if tonumber(ARGV[2]) <= wm then return 0 end
local n, from = #ARGV - 3, 1
if tonumber(ARGV[1]) <= wm then
  for p in string.gmatch(ARGV[3], '%d+') do
    if tonumber(p) > wm then break end
    from = from + 1
  end
end
for i = from, n, 1000 do
  redis.call('RPUSH', KEYS[1], unpack(ARGV, 3 + i, 3 + math.min(i + 999, n)))
end
redis.call('SET', KEYS[2], ARGV[2])
return n - from + 1
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
	})
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
