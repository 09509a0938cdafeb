// Package redisx builds the Redis client every stage shares from config: a
// single node or a Redis Cluster behind go-redis's UniversalClient.
package redisx

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/imstream/imstream/internal/plumbing/config"
	"github.com/imstream/imstream/internal/plumbing/tick"
)

// New returns a client for cfg (password/ACL user, TLS, Cluster). It does
// not connect; see WaitReady. It fails only on unreadable TLS files.
func New(cfg config.Redis) (redis.UniversalClient, error) {
	tlsCfg, err := cfg.TLS.Config()
	if err != nil {
		return nil, fmt.Errorf("redis.tls: %w", err)
	}
	if cfg.Cluster {
		return redis.NewClusterClient(&redis.ClusterOptions{
			Addrs: cfg.Addrs, Username: cfg.Username, Password: cfg.Password, TLSConfig: tlsCfg,
			PoolSize: cfg.PoolSize, DialTimeout: cfg.DialTimeout,
			ReadTimeout: cfg.ReadTimeout, WriteTimeout: cfg.WriteTimeout,
			MaxRedirects: 8,
		}), nil
	}
	return redis.NewClient(&redis.Options{
		Addr: cfg.Addrs[0], Username: cfg.Username, Password: cfg.Password, DB: cfg.DB, TLSConfig: tlsCfg,
		PoolSize: cfg.PoolSize, DialTimeout: cfg.DialTimeout,
		ReadTimeout: cfg.ReadTimeout, WriteTimeout: cfg.WriteTimeout,
		MaxRetries: -1, // the stages retry whole batches themselves
	}), nil
}

// MustNew is New for configurations already validated.
func MustNew(cfg config.Redis) redis.UniversalClient {
	c, err := New(cfg)
	if err != nil {
		panic(err)
	}
	return c
}

// WaitReady pings until Redis answers or ctx ends.
func WaitReady(ctx context.Context, c redis.UniversalClient) error {
	for {
		err := c.Ping(ctx).Err()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("redis: not reachable: %w", err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// IsRetryable reports whether a Redis error is transient (connection loss,
// timeouts, failover, loading, cluster redirections): a stage retries the
// batch rather than dead-lettering it.
func IsRetryable(err error) bool {
	if err == nil {
		return false
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, redis.ErrClosed) {
		return true
	}
	msg := err.Error()
	for _, p := range []string{"LOADING", "READONLY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "MOVED", "ASK", "EOF", "connection", "i/o timeout", "NOSCRIPT"} {
		if strings.Contains(msg, p) {
			return true
		}
	}
	return false
}

// slogLogger sends go-redis's own log lines (reconnects, pool trouble)
// through log/slog, so they follow log.format and log.level. While Redis
// is down go-redis repeats the same line for every connection attempt of
// every caller (over a hundred in 15 s); one line per cause is logged
// every repeatEvery, with how many were left out.
type slogLogger struct{ quiet tick.Quiet }

const repeatEvery = 30 * time.Second

func (l *slogLogger) Printf(ctx context.Context, format string, v ...any) {
	ok, left := l.quiet.Allow(format, repeatEvery)
	if !ok {
		return
	}
	if left > 0 {
		slog.WarnContext(ctx, "redis client: "+fmt.Sprintf(format, v...), "repeated", left)
		return
	}
	slog.WarnContext(ctx, "redis client: "+fmt.Sprintf(format, v...))
}

// UseSlog routes go-redis's log lines through slog's default logger.
func UseSlog() {
	redis.SetLogger(&slogLogger{})
}
