package redisx_test

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/imstream/imstream/internal/plumbing/redisx"
	"github.com/imstream/imstream/internal/tools/embedded"
	"github.com/imstream/imstream/internal/tools/testkit"
)

// TestExecScriptsReloads: EVALSHA of a script Redis does not have (a new
// server, SCRIPT FLUSH) loads it and runs the pipeline again, so every call
// takes effect; an idempotent script takes effect once.
func TestExecScriptsReloads(t *testing.T) {
	r := testkit.Redis(t, embedded.RedisOptions{})
	rc := testkit.RedisClient(t, r.Addr)
	ctx := context.Background()
	setMax := redis.NewScript(`
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > cur then redis.call('SET', KEYS[1], ARGV[1]) end
return redis.call('GET', KEYS[1])`)
	run := func(keys ...string) []*redis.Cmd {
		var cmds []*redis.Cmd
		err := redisx.ExecScripts(ctx, rc, []*redis.Script{setMax}, func(p redis.Pipeliner) {
			cmds = cmds[:0]
			for i, k := range keys {
				cmds = append(cmds, setMax.EvalSha(ctx, p, []string{k}, i+1))
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		return cmds
	}
	for round := 0; round < 2; round++ {
		if err := rc.ScriptFlush(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		cmds := run("a", "b", "c")
		for i, c := range cmds {
			if v, err := c.Text(); err != nil || v != string(rune('1'+i)) {
				t.Fatalf("round %d call %d: %q %v", round, i, v, err)
			}
		}
	}
	if ok, _ := setMax.Exists(ctx, rc).Result(); !ok[0] {
		t.Fatal("script not loaded")
	}
}
