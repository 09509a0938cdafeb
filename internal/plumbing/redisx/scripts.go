package redisx

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// ExecScripts runs a pipeline of EVALSHA calls that fill queues (with
// Script.EvalSha: the script bodies are not sent, nor hashed by Redis, per
// call). When Redis answers NOSCRIPT — a restart, a failover, a new Cluster
// node, SCRIPT FLUSH — it loads scripts (on every master of a Cluster) and
// runs fill again, once. fill must queue the same calls each time and every
// call must be idempotent: those that succeeded the first time run twice.
// The error is the pipeline's first, as from Pipeliner.Exec.
func ExecScripts(ctx context.Context, c redis.UniversalClient, scripts []*redis.Script, fill func(redis.Pipeliner)) error {
	for attempt := 0; ; attempt++ {
		pipe := c.Pipeline()
		fill(pipe)
		cmds, err := pipe.Exec(ctx)
		if err == nil || attempt > 0 || !anyNoScript(cmds) {
			return err
		}
		for _, s := range scripts {
			if err := s.Load(ctx, c).Err(); err != nil {
				return fmt.Errorf("redis: script load: %w", err)
			}
		}
	}
}

func anyNoScript(cmds []redis.Cmder) bool {
	for _, c := range cmds {
		if redis.HasErrorPrefix(c.Err(), "NOSCRIPT") {
			return true
		}
	}
	return false
}
