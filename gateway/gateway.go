// Package gateway is `imstream gateway`: a TCP server speaking imr's
// protocol (package imr) so that unmodified im_service IM servers can use
// imstream by pointing their route_addrs at it.
//
// Each accepted connection is one IM server in presence: a server id (from
// its remote IP — with a -2, -3 suffix while other connections from that
// IP are live — or IP and port; see gateway.server_id), a new epoch per
// connection, server_up at connect, heartbeats while connected, server_down
// when it closes. Frames 130/131/136/137 become presence events, 132/135/138
// and 134 publish events with the inner frame kept in msg.raw, routed by
// im_service's router's rules (route "imr"; gateway.rules); they are
// produced in order, in batches, by one producer per connection, and a full
// queue stops reading the socket (TCP backpressure, never a drop); with
// gateway.quotas an app over its quota is held in memory, in order, and the
// rest of the connection goes on (quota.go). The
// connection's imr.deliver.<server> topic is consumed (consumer group
// <gateway.group>-<server>) and written back as 132/135/138 frames with the
// inner frame byte-for-byte; offsets are committed only after the frames
// were written to the socket, repeats (same src) are dropped, and a slow IM
// server only slows its own consumer. A malformed frame closes that
// connection with a log line and a metric; an inner message of a 132/135/138
// the gateway cannot decode is forwarded as it is (as imr does; counted),
// one of a 134 — or of any route frame with gateway.rules imstream — goes
// to the dead-letter topic. Several gateways can run at once.
//
// Metrics (besides the shared ones, stage="gateway"):
//
//	imstream_gateway_connections                 connected IM servers
//	imstream_gateway_frames_total{cmd}           frames read, by route command
//	imstream_gateway_opaque_frames_total{cmd}    route frames forwarded with an inner message not decoded
//	imstream_gateway_other_router_deliveries_total  deliveries left to the gateway of their receiver's router (gateway.routers)
//	imstream_gateway_bad_frames_total{reason}    connections closed for a malformed frame
//	imstream_gateway_delivered_frames_total      frames written back to IM servers
//	imstream_gateway_repeats_total               deliveries dropped as repeats
//	imstream_gateway_broadcasts_total{result}    broadcasts expanded into frames (written) or refused (gateway.max_broadcast_users)
//	imstream_gateway_refused_connections_total{reason}  connections closed before their session (max_connections, handshake_timeout, not_allowed, tls_handshake)
//	imstream_gateway_quota_held_total{app,lane}  events that waited for their app's quota (gateway.quotas; quota.go)
//	imstream_gateway_quota_holding               events held by quota now
//	imstream_gateway_quota_paused_total          connections' reading stopped at gateway.quotas.max_held held in the gateway
//	imstream_gateway_quota_flushed_total         held events queued without waiting, their connection having ended
package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/imstream/imstream/gateway/imr"
	"github.com/imstream/imstream/internal/plumbing/config"
	"github.com/imstream/imstream/internal/plumbing/kafkax"
	"github.com/imstream/imstream/internal/plumbing/obs"
	"github.com/imstream/imstream/internal/plumbing/stage"
	"github.com/imstream/imstream/internal/plumbing/tick"
)

// Stage is the name used in metrics and dead-letter headers.
const Stage = "gateway"

// Gateway is the IMR-compatible gateway.
type Gateway struct {
	cfg  config.Gateway
	env  stage.Env
	log  *slog.Logger
	w    *kafka.Writer // the online lane: presence and publish events, written at once
	wb   *kafka.Writer // the bulk lane: push events, batched (kafka.linger)
	core *stage.Core   // dead letters, decoding and the consume loop of the deliver consumers
	m    metrics

	mu        sync.Mutex
	conns     map[string]*conn // by server id
	lastEpoch int64            // guarded by mu
	open      atomic.Int64     // accepted connections not yet closed
	queued    atomic.Int64     // events read from IM servers and not yet produced (or given up)
	ln        net.Listener
	ready     chan struct{}
	giveUp    time.Duration  // how long a closed connection keeps producing its last events
	allow     []netip.Prefix // gateway.allow_cidrs; empty: any source
	refusals  tick.Quiet     // refusal's lines
	limit     *limiter       // gateway.quotas: nil when off
	held      *budget        // events held by quota, all connections (gateway.quotas.max_held)
	qm        *quotaMetrics
}

type metrics struct {
	conns     prometheus.Gauge
	frames    *prometheus.CounterVec
	opaque    *prometheus.CounterVec
	others    prometheus.Counter
	bad       *prometheus.CounterVec
	delivered prometheus.Counter
	repeats   prometheus.Counter

	broadcasts, broadcastsRefused prometheus.Counter
	refused                       *prometheus.CounterVec
}

// New builds the gateway from its section, the quotas it applies with
// gateway.quotas.enabled (fanout.fair_share's), and the process's env; Run
// starts it.
func New(cfg config.Gateway, quotas config.FairShare, env stage.Env) (*Gateway, error) {
	core, err := stage.Declare(&env, stage.Declaration{Name: Stage}) // its inputs are per connection (conn.go)
	if err != nil {
		return nil, err
	}
	g := &Gateway{cfg: cfg, env: env, log: env.Logger.With("stage", Stage), conns: map[string]*conn{}, ready: make(chan struct{}), giveUp: 30 * time.Second,
		allow: cfg.AllowedPrefixes(),
		m: metrics{
			conns:  obs.Gauge("imstream_gateway_connections", "IM servers connected to this gateway."),
			frames: obs.CounterVec("imstream_gateway_frames_total", "Frames read from IM servers, by route command.", "cmd"),
			bad:    obs.CounterVec("imstream_gateway_bad_frames_total", "Connections closed because of a malformed frame, by reason.", "reason"),
			others: obs.Counter("imstream_gateway_other_router_deliveries_total",
				"Deliveries (frames of a broadcast) not written because their receiver, room or group is another router's (gateway.routers): that gateway writes them to the same IM server."),
			opaque: obs.CounterVec("imstream_gateway_opaque_frames_total",
				"Route frames whose inner message the gateway could not decode (an unknown command, a body it does not parse), forwarded as they are (gateway.rules imr), by route command.", "cmd"),
			delivered: obs.Counter("imstream_gateway_delivered_frames_total", "Frames written back to IM servers."),
			repeats: obs.Counter("imstream_gateway_repeats_total",
				"Deliveries dropped because their src was already delivered on this connection."),
			refused: obs.CounterVec("imstream_gateway_refused_connections_total",
				"Connections closed before their session started, by reason (max_connections, handshake_timeout, not_allowed, tls_handshake).", "reason"),
		}}
	for _, r := range []string{"max_connections", "handshake_timeout", "not_allowed", "tls_handshake"} {
		g.m.refused.WithLabelValues(r)
	}
	bc := obs.CounterVec("imstream_gateway_broadcasts_total",
		"Broadcasts a gateway expanded into one frame per subscribed user of the app (written), or did not write because the connection had more such users than gateway.max_broadcast_users (refused).", "result")
	g.m.broadcasts, g.m.broadcastsRefused = bc.WithLabelValues("written"), bc.WithLabelValues("refused")
	for _, c := range []int{imr.CmdPublish, imr.CmdPublishGroup, imr.CmdPublishRoom} {
		g.m.opaque.WithLabelValues(strconv.Itoa(c))
	}
	if err := env.Register(g.m.conns, g.m.frames, g.m.opaque, g.m.others, g.m.bad, g.m.delivered, g.m.repeats, g.m.refused, bc); err != nil {
		return nil, err
	}
	g.qm = newQuotaMetrics(quotas.TopApps) // exported (at 0) with quotas off too, as the fanout's per-app series
	if err := env.Register(g.qm.collectors()...); err != nil {
		return nil, err
	}
	if cfg.Quotas.Enabled {
		g.limit = newLimiter(quotas, cfg.Quotas.Scale, time.Now)
		g.held = &budget{max: cfg.Quotas.MaxHeld}
	}
	g.w = kafkax.NoLinger(env.Conn.NewWriter(env.Kafka, ""))
	g.wb = env.Conn.NewWriter(env.Kafka, "")
	g.core = core
	env.Metrics.Known(env.Metrics.Skipped, Stage, "produce_failed")
	env.Metrics.KnownSinks("im_server")
	return g, nil
}

// SetQuotas replaces the quotas the gateway applies (a reload); without
// gateway.quotas.enabled it does nothing.
func (g *Gateway) SetQuotas(quotas config.FairShare) {
	if g.limit != nil {
		g.limit.setConfig(quotas)
	}
}

// Addr returns the listening address once Run has bound it.
func (g *Gateway) Addr(ctx context.Context) (string, error) {
	select {
	case <-g.ready:
		return g.ln.Addr().String(), nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// Run listens and serves IM servers until ctx ends; it then closes every
// connection (each sends server_down).
func (g *Gateway) Run(ctx context.Context) error {
	defer g.w.Close()
	defer g.wb.Close()
	defer g.core.Close()
	k := g.env.Kafka
	if err := stage.PrepareTopics(ctx, g.env.Conn, k, k.Topics.Presence, k.Topics.Publish, k.Topics.Bulk); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", g.cfg.Listen)
	if err != nil {
		return fmt.Errorf("gateway: listen: %w", err)
	}
	if tc, err := g.cfg.TLS.Config(); err != nil {
		ln.Close()
		return fmt.Errorf("gateway.tls: %w", err)
	} else if tc != nil {
		ln = tls.NewListener(ln, tc)
	}
	g.ln = ln
	close(g.ready)
	g.log.Info("gateway listening", "addr", ln.Addr().String())
	go func() { <-ctx.Done(); ln.Close() }()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		nc, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("gateway: accept: %w", err)
		}
		if !g.allowed(nc.RemoteAddr()) {
			g.m.refused.WithLabelValues("not_allowed").Inc()
			g.refusal("refusing a connection from outside gateway.allow_cidrs", "remote", nc.RemoteAddr().String(), "allow", g.cfg.AllowCIDRs)
			_ = nc.Close()
			continue
		}
		if max := g.cfg.MaxConnections; max > 0 && g.open.Load() >= int64(max) {
			g.m.refused.WithLabelValues("max_connections").Inc()
			g.log.Warn("refusing a connection: gateway.max_connections reached", "remote", nc.RemoteAddr().String(), "max", max)
			_ = nc.Close()
			continue
		}
		g.open.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer g.open.Add(-1)
			g.serve(ctx, nc)
		}()
	}
}

// refusal logs a refused connection, at most one line a second: a scan
// must not flood the log (every refusal is counted).
func (g *Gateway) refusal(msg string, args ...any) {
	if ok, _ := g.refusals.Allow("refusal", time.Second); ok {
		g.log.Warn(msg, args...)
	}
}

// allowed reports whether a connection from addr may start a session:
// gateway.allow_cidrs is empty or holds its address.
func (g *Gateway) allowed(addr net.Addr) bool {
	if len(g.allow) == 0 {
		return true
	}
	ap, err := netip.ParseAddrPort(addr.String())
	if err != nil {
		return false
	}
	ip := ap.Addr().Unmap() // an IPv4 client of a dual-stack listener
	for _, p := range g.allow {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// serverID names the IM server behind a connection.
func (g *Gateway) serverID(addr net.Addr) string {
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		host = addr.String()
	}
	prefix := g.cfg.IDPrefix
	if g.cfg.Routers > 1 { // each gateway its own servers: one IM server is one server per gateway
		prefix += "g" + strconv.Itoa(g.cfg.RouterIndex) + "-"
	}
	id := prefix + host
	if g.cfg.ServerID == "ip_port" {
		id += "_" + port
	}
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-' {
			return r
		}
		return '_'
	}, id)
}

// imrRules reports whether the gateway routes by im_service's router's
// rules (gateway.rules imr): its events say route "imr", and an inner
// message it cannot decode is forwarded as it is.
func (g *Gateway) imrRules() bool { return g.cfg.Rules == "imr" }

// ours reports whether deliveries keyed by id (a receiver, room or group)
// are this gateway's to write: always with one router; with
// gateway.routers N, those with id % N == gateway.router_index — the
// router an im_service IM server sends them to (im_service server/app.go
// GetChannel, GetRoomChannel, GetGroupChannel).
func (g *Gateway) ours(id int64) bool {
	n := int64(g.cfg.Routers)
	return n <= 1 || (id%n+n)%n == int64(g.cfg.RouterIndex)
}

// Queued returns how many events read from IM servers are not in Kafka yet.
func (g *Gateway) Queued() int64 { return g.queued.Load() }

// nextEpoch returns a new epoch: the time in unix ms, or one more than the
// last one handed out when that is not below it (connections within one
// millisecond, a clock that stepped back).
func (g *Gateway) nextEpoch() int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.lastEpoch = max(time.Now().UnixMilli(), g.lastEpoch+1)
	return g.lastEpoch
}

// claim gives c its server id: base when no live connection holds it,
// else base-2, base-3, … (the lowest one free). Two IM server processes
// behind one address are thus two servers in presence, each with its own
// deliver topic, and neither closes the other. A process that reconnects
// after its old connection ended takes the lowest free id again — its own
// when it was the only one — and with it the deliveries waiting there.
func (g *Gateway) claim(c *conn, base string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	c.id = base
	for n := 2; g.conns[c.id] != nil; n++ {
		c.id = base + "-" + strconv.Itoa(n)
	}
	g.conns[c.id] = c
}

// DeliverGroups returns, for each IM server connected now, its deliver
// topic and the consumer group that reads it, for the lag exporter.
func (g *Gateway) DeliverGroups() [][2]string {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([][2]string, 0, len(g.conns))
	for id := range g.conns {
		out = append(out, [2]string{g.cfg.Group + "-" + id, g.env.Kafka.Topics.DeliverPrefix + id})
	}
	return out
}

func (g *Gateway) release(c *conn) {
	g.mu.Lock()
	if g.conns[c.id] == c {
		delete(g.conns, c.id)
	}
	g.mu.Unlock()
}
