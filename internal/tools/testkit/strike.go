package testkit

import (
	"context"
	"errors"
	"sync"

	"github.com/redis/go-redis/v9"
)

// Strike is a go-redis hook that acts once on the next pipeline holding at
// least Calls EVALSHA calls: the call of index Refuse is failed with
// ErrRefused without being sent (what a failover, a moved slot or a
// refused write does to one call of a pipeline), and after the call of
// index After a DEL of Free is sent (used memory falls under maxmemory
// between two calls, as at a real memory limit). Refuse or After -1: none.
type Strike struct {
	Calls, Refuse, After int
	Free                 string

	mu   sync.Mutex
	done bool
}

// ErrRefused is the error of the call a Strike refuses.
var ErrRefused = errors.New("LOADING Redis is loading the dataset in memory")

// Struck reports whether the strike has happened.
func (s *Strike) Struck() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.done
}

// DialHook implements redis.Hook.
func (s *Strike) DialHook(next redis.DialHook) redis.DialHook { return next }

// ProcessHook implements redis.Hook.
func (s *Strike) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

// ProcessPipelineHook implements redis.Hook.
func (s *Strike) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		s.mu.Lock()
		armed := !s.done && evalShas(cmds) >= s.Calls
		s.done = s.done || armed
		s.mu.Unlock()
		if !armed {
			return next(ctx, cmds)
		}
		var sent []redis.Cmder
		var refused error
		call := 0
		for _, c := range cmds {
			if c.Name() != "evalsha" {
				sent = append(sent, c)
				continue
			}
			if call == s.Refuse {
				refused = ErrRefused
				c.SetErr(refused)
			} else {
				sent = append(sent, c)
			}
			if call == s.After && s.Free != "" {
				sent = append(sent, redis.NewIntCmd(ctx, "del", s.Free))
			}
			call++
		}
		err := next(ctx, sent)
		if err == nil {
			err = refused
		}
		return err
	}
}

func evalShas(cmds []redis.Cmder) int {
	n := 0
	for _, c := range cmds {
		if c.Name() == "evalsha" {
			n++
		}
	}
	return n
}
