package ingest

import (
	"context"
	"time"

	"github.com/imstream/imstream/internal/plumbing/tick"
	"github.com/imstream/imstream/schemas"
)

// Subscribe reports that uid has at least one connection on this server;
// online=false means connected but not reachable for push decisions (the
// last call per user wins).
func (p *Producer) Subscribe(ctx context.Context, appid, uid int64, online bool) error {
	return p.send(ctx, p.enc.Subscribe(appid, uid, online))
}

// Unsubscribe reports that uid's last connection on this server left.
func (p *Producer) Unsubscribe(ctx context.Context, appid, uid int64) error {
	return p.send(ctx, p.enc.Unsubscribe(appid, uid))
}

// SubscribeRoom reports that this server has a subscriber in room.
func (p *Producer) SubscribeRoom(ctx context.Context, appid, room int64) error {
	return p.send(ctx, p.enc.SubscribeRoom(appid, room))
}

// UnsubscribeRoom reports that this server's last subscriber of room left.
func (p *Producer) UnsubscribeRoom(ctx context.Context, appid, room int64) error {
	return p.send(ctx, p.enc.UnsubscribeRoom(appid, room))
}

func (p *Producer) serverEvent(ctx context.Context, t schemas.Type) error {
	return p.send(ctx, p.enc.Server(t))
}

// ServerUp announces this server's epoch; the state of its older epochs
// becomes void. It does not start the heartbeat loop; Start does both.
func (p *Producer) ServerUp(ctx context.Context) error {
	return p.serverEvent(ctx, schemas.TypeServerUp)
}

// Heartbeat renews this server's lease.
func (p *Producer) Heartbeat(ctx context.Context) error {
	return p.serverEvent(ctx, schemas.TypeHeartbeat)
}

// ServerDown announces a clean shutdown: this server's users and rooms stop
// counting at once.
func (p *Producer) ServerDown(ctx context.Context) error {
	return p.serverEvent(ctx, schemas.TypeServerDown)
}

// Start sends ServerUp and starts the heartbeat loop (one Heartbeat every
// HeartbeatInterval) until Close.
func (p *Producer) Start(ctx context.Context) error {
	if err := p.ServerUp(ctx); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopHB != nil {
		return nil
	}
	hctx, cancel := context.WithCancel(context.Background())
	p.stopHB, p.hbDone = cancel, make(chan struct{})
	go func() {
		defer close(p.hbDone)
		// A busy producer may take longer than an interval: the heartbeat
		// waits (the lease is many intervals long) rather than being
		// abandoned; ticks missed meanwhile are skipped.
		tick.Every(hctx, p.cfg.HeartbeatInterval, func() {
			bctx, cancel := context.WithTimeout(hctx, max(10*p.cfg.HeartbeatInterval, 10*time.Second))
			err := p.Heartbeat(bctx)
			cancel()
			if err != nil && hctx.Err() == nil && p.cfg.OnHeartbeatError != nil {
				p.cfg.OnHeartbeatError(err)
			}
		})
	}()
	return nil
}

// Close stops the heartbeat loop, sends ServerDown when Start was called
// (unless ctx is already done), and flushes and closes the writers.
func (p *Producer) Close(ctx context.Context) error {
	p.mu.Lock()
	stop, done := p.stopHB, p.hbDone
	p.stopHB = nil
	p.mu.Unlock()
	var err error
	if stop != nil {
		stop()
		<-done
		if ctx.Err() == nil {
			err = p.ServerDown(ctx)
		}
	}
	for _, l := range []*lane{p.online, p.bulk} {
		if cerr := l.writer().Close(); err == nil {
			err = cerr
		}
	}
	return err
}
