package gateway

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/imstream/imstream/gateway/imr"
	"github.com/imstream/imstream/ingest"
	"github.com/imstream/imstream/internal/plumbing/kafkax"
	"github.com/imstream/imstream/internal/plumbing/stage"
	"github.com/imstream/imstream/internal/plumbing/tick"
	"github.com/imstream/imstream/schemas"
)

// conn is one connected IM server.
type conn struct {
	g      *Gateway
	nc     net.Conn
	id     string
	epoch  int64
	enc    *ingest.Encoder
	out    chan kafka.Message // the online lane's queue
	bulk   *queue             // the bulk lane's, started at the first push
	hold   *holding           // events held by quota (gateway.quotas), or nil
	pctx   context.Context    // the producers' life: the connection's and Gateway.giveUp after
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	wmu  sync.Mutex      // one socket write at a time (deliver partitions are handled concurrently)
	seen *ingest.Repeats // what was written to the socket, by src

	smu  sync.Mutex
	subs map[int64]map[int64]bool // the users the IM server subscribed, by appid: online or not (for broadcasts)
}

// subscribed records a subscribe (on: its online flag) or an unsubscribe.
func (c *conn) subscribed(appid, uid int64, sub, on bool) {
	c.smu.Lock()
	defer c.smu.Unlock()
	if c.subs == nil {
		c.subs = map[int64]map[int64]bool{}
	}
	users := c.subs[appid]
	if !sub {
		delete(users, uid)
		if len(users) == 0 {
			delete(c.subs, appid)
		}
		return
	}
	if users == nil {
		users = map[int64]bool{}
		c.subs[appid] = users
	}
	users[uid] = on
}

// audience returns the subscribed users of appid a broadcast reaches
// (online ones only, or all), sorted, and false when they are more than
// limit.
func (c *conn) audience(appid int64, onlineOnly bool, limit int) ([]int64, bool) {
	c.smu.Lock()
	defer c.smu.Unlock()
	var out []int64
	for uid, on := range c.subs[appid] {
		if on || !onlineOnly {
			if len(out) == limit {
				return nil, false
			}
			out = append(out, uid)
		}
	}
	slices.Sort(out)
	return out, true
}

func (c *conn) close() {
	c.cancel()
	_ = c.nc.Close()
}

// serve runs one connection. Until its first frame arrives a connection is
// only a socket and a goroutine waiting on a 12-byte header: no presence,
// no queue, no producer, no deliver topic or consumer group (an IM server
// without users or rooms sends nothing and is sent nothing). The first
// frame starts the session; gateway.handshake_timeout, when set, closes a
// connection that sends none.
func (g *Gateway) serve(ctx context.Context, nc net.Conn) {
	defer nc.Close()
	if tc, ok := nc.(*tls.Conn); ok { // gateway.tls: the handshake first, bounded
		hctx, cancel := context.WithTimeout(ctx, cmp.Or(g.cfg.HandshakeTimeout, 10*time.Second))
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				g.m.refused.WithLabelValues("tls_handshake").Inc()
				g.refusal("closing a connection whose TLS handshake failed (gateway.tls)", "remote", nc.RemoteAddr().String(), "err", err)
			}
			return
		}
	}
	var hdr [imr.HeaderSize]byte
	if t := g.cfg.HandshakeTimeout; t > 0 {
		_ = nc.SetReadDeadline(time.Now().Add(t))
	}
	stop := context.AfterFunc(ctx, func() { _ = nc.SetReadDeadline(time.Now()) })
	_, err := io.ReadFull(nc, hdr[:])
	stop()
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() && ctx.Err() == nil {
			g.m.refused.WithLabelValues("handshake_timeout").Inc()
			g.log.Info("closing a connection that sent no frame within gateway.handshake_timeout", "remote", nc.RemoteAddr().String())
		}
		return
	}
	_ = nc.SetReadDeadline(time.Time{})
	g.session(ctx, nc, io.MultiReader(bytes.NewReader(hdr[:]), nc))
}

// session runs a connection that sent its first frame; r reads the
// connection from that frame on.
func (g *Gateway) session(ctx context.Context, nc net.Conn, r io.Reader) {
	c := &conn{g: g, nc: nc, epoch: g.nextEpoch(),
		out: make(chan kafka.Message, g.cfg.QueueSize), done: make(chan struct{}), seen: ingest.NewRepeats()}
	c.ctx, c.cancel = context.WithCancel(ctx)
	if g.limit != nil {
		c.hold = newHolding(c)
	}
	defer close(c.done)
	defer c.close()
	t := g.env.Kafka.Topics
	g.claim(c, g.serverID(nc.RemoteAddr()))
	c.enc = ingest.NewEncoder(c.id, c.epoch, ingest.Topics{Presence: t.Presence, Publish: t.Publish, Bulk: t.Bulk})
	if g.imrRules() {
		c.enc.Route(schemas.RouteIMR)
	}
	if c.g.env.Kafka.Binary() {
		c.enc.Binary()
	}
	defer g.release(c)
	g.m.conns.Inc()
	defer g.m.conns.Dec()
	log := g.log.With("server", c.id, "epoch", c.epoch, "remote", nc.RemoteAddr().String())
	log.Info("IM server connected")

	pctx, stopProducing := context.WithCancel(context.Background())
	defer stopProducing()
	c.pctx = pctx
	produced := make(chan struct{})
	go func() { defer close(produced); c.produce(pctx, c.out, g.w) }()
	c.send(c.enc.Server(schemas.TypeServerUp))

	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); c.heartbeat() }()
	go func() { defer wg.Done(); c.deliver(log) }()

	// The gateway stopping (SIGTERM) ends the connection: its last events
	// and server_down are produced within shutdown.grace, and the IM server
	// reconnects (to this gateway again, or another in its route_addrs).
	stopping := context.AfterFunc(ctx, func() { _ = nc.SetReadDeadline(time.Now()) })
	defer stopping()
	err := c.read(r)
	switch {
	case ctx.Err() != nil:
		log.Info("gateway stopping: connection closed")
	case err == nil || errors.Is(err, io.EOF) || c.ctx.Err() != nil:
		log.Info("IM server disconnected")
	case errors.Is(err, imr.ErrFrame):
		log.Warn("closing connection: bad frame", "err", err)
	default:
		log.Info("IM server connection lost", "err", err)
	}
	c.close()
	wg.Wait()
	// Keep trying to get the last events out for a while, then give up
	// (each event counted): a closed connection must not hold the gateway
	// forever, not even when Kafka is down and its queue is full.
	giveUp := time.AfterFunc(g.giveUp, stopProducing)
	defer giveUp.Stop()
	if c.hold != nil {
		c.hold.end() // what it held is queued now, before server_down
	}
	// server_down goes last, after every event read from this connection.
	c.g.queued.Add(1)
	select {
	case c.out <- c.enc.Server(schemas.TypeServerDown).Message():
	case <-pctx.Done():
		c.g.queued.Add(-1)
		c.lost(1, "server_down not queued: Kafka unreachable and the queue full until the give-up time", pctx.Err())
	}
	close(c.out)
	if c.bulk != nil {
		close(c.bulk.ch)
	}
	for _, done := range c.producers(produced) {
		<-done
	}
}

// lost logs and counts events given up (why says how) once the connection
// or the gateway was closing.
func (c *conn) lost(n int, why string, err error) {
	c.g.log.Error("gateway: events lost: "+why, "server", c.id, "events", n, "err", err)
	c.g.env.Metrics.Skipped.WithLabelValues(Stage, "produce_failed").Add(float64(n))
}

// queue is a lane's queue and the goroutine producing from it.
type queue struct {
	ch   chan kafka.Message
	done chan struct{}
}

// producers returns what to wait for: the online producer's end and, when
// a push was read, the bulk producer's.
func (c *conn) producers(online chan struct{}) []chan struct{} {
	if c.bulk == nil {
		return []chan struct{}{online}
	}
	return []chan struct{}{online, c.bulk.done}
}

// lane returns the queue a record goes to. Push events have a lane of their
// own (kafka.topics.bulk), so that online messages of this connection
// never wait behind a push burst it sends: its own queue, producer
// goroutine, writer and topic. It is started at the first push, from the
// read goroutine (the only one that sends pushes).
func (c *conn) lane(r ingest.Record) chan kafka.Message {
	if !c.g.env.Kafka.Topics.IsBulkLane(r.Topic) {
		return c.out
	}
	if c.bulk == nil {
		c.bulk = &queue{ch: make(chan kafka.Message, c.g.cfg.QueueSize), done: make(chan struct{})}
		go func() { defer close(c.bulk.done); c.produce(c.pctx, c.bulk.ch, c.g.wb) }()
	}
	return c.bulk.ch
}

// send queues a record; it blocks while the queue is full (backpressure)
// and gives up only when the connection is closing (the gateway stops):
// the record is then counted lost.
func (c *conn) send(r ingest.Record) bool {
	c.g.queued.Add(1)
	select {
	case c.lane(r) <- r.Message():
		return true
	case <-c.ctx.Done():
		c.g.queued.Add(-1)
		c.lost(1, "an event read from the IM server not queued: the gateway stopped while the queue was full", c.ctx.Err())
		return false
	}
}

// produce writes the records queued on q with w, in order, in batches of
// what is waiting, until q is closed; it retries failed writes and drops
// nothing while pctx lives (the connection's life and Gateway.giveUp after
// it closed, so server_down and the last events get out).
func (c *conn) produce(pctx context.Context, q chan kafka.Message, w *kafka.Writer) {
	batch := make([]kafka.Message, 0, 1000)
	for m := range q {
		batch = append(batch[:0], m)
	fill:
		for len(batch) < cap(batch) {
			select {
			case m, ok := <-q:
				if !ok {
					break fill
				}
				batch = append(batch, m)
			default:
				break fill
			}
		}
		start := time.Now()
		err := kafkax.Write(pctx, w, batch...)
		for err != nil && pctx.Err() == nil { // keep trying while the connection's events may still get out
			c.g.log.Warn("gateway: produce failed; retrying", "server", c.id, "events", len(batch), "err", err)
			select {
			case <-pctx.Done():
			case <-time.After(time.Second):
			}
			err = kafkax.Write(pctx, w, batch...)
		}
		c.g.queued.Add(-int64(len(batch)))
		c.g.env.Metrics.Produce.WithLabelValues(Stage).Observe(time.Since(start).Seconds())
		if err != nil {
			c.lost(len(batch), "Kafka unreachable after the connection closed", err)
		}
	}
}

func (c *conn) heartbeat() {
	tick.Every(c.ctx, c.g.cfg.HeartbeatInterval, func() { c.send(c.enc.Server(schemas.TypeHeartbeat)) })
}

// read turns frames into events until the connection ends.
func (c *conn) read(nr io.Reader) error {
	r := bufio.NewReaderSize(nr, 64<<10)
	frames := c.g.m.frames
	for n := int64(0); ; n++ {
		f, err := imr.ReadFrame(r)
		if err != nil {
			if errors.Is(err, imr.ErrFrame) {
				c.g.m.bad.WithLabelValues("framing").Inc()
			}
			return err
		}
		frames.WithLabelValues(strconv.Itoa(int(f.Cmd))).Inc()
		rec, app, err := c.event(f)
		var u unroutable
		switch {
		case errors.As(err, &u):
			c.reject(f, n, u.error)
			continue
		case err != nil:
			c.g.m.bad.WithLabelValues("body").Inc()
			return err
		}
		if rec.Topic == "" {
			continue
		}
		if c.hold != nil && app.ok {
			k := laneKey{app.id, c.g.env.Kafka.Topics.IsBulkLane(rec.Topic)}
			if !c.hold.send(k, rec) {
				return nil
			}
		} else if !c.send(rec) {
			return nil
		}
	}
}

// appOf is the app of a publish or push event (ok), which quotas apply to.
type appOf struct {
	id int64
	ok bool
}

// unroutable is an inner message that cannot be routed: dead-lettered, and
// the connection stays.
type unroutable struct{ error }

// event converts a frame, and names the app of a publish or push. A
// malformed route body is an error (the connection closes); an inner
// message that cannot be routed is an unroutable error (dead-lettered; the
// connection stays). A zero Record means there is nothing to produce.
func (c *conn) event(f imr.Frame) (ingest.Record, appOf, error) {
	e := c.enc
	switch f.Cmd {
	case imr.CmdSubscribe:
		s, err := imr.ParseSubscribe(f.Body)
		if err == nil {
			c.subscribed(s.AppID, s.UID, true, s.Online != 0)
		}
		return e.Subscribe(s.AppID, s.UID, s.Online != 0), appOf{}, err
	case imr.CmdUnsubscribe:
		id, err := imr.ParseID(f.Body)
		if err == nil {
			c.subscribed(id.AppID, id.ID, false, false)
		}
		return e.Unsubscribe(id.AppID, id.ID), appOf{}, err
	case imr.CmdSubscribeRoom:
		id, err := imr.ParseID(f.Body)
		return e.SubscribeRoom(id.AppID, id.ID), appOf{}, err
	case imr.CmdUnsubscribeRoom:
		id, err := imr.ParseID(f.Body)
		return e.UnsubscribeRoom(id.AppID, id.ID), appOf{}, err
	case imr.CmdPublish, imr.CmdPublishGroup, imr.CmdPublishRoom:
		rt, err := imr.ParseRoute(f.Body)
		m, err := inner(rt.Inner, err)
		var u unroutable
		if errors.As(err, &u) && c.g.imrRules() && len(rt.Inner) > 0 {
			// imr forwards what it does not understand: so do we, as it is.
			m, err = imr.OpaqueInner(rt.Inner), nil
			c.g.m.opaque.WithLabelValues(strconv.Itoa(int(f.Cmd))).Inc()
		}
		if err != nil {
			return ingest.Record{}, appOf{}, err
		}
		app := appOf{rt.AppID, true}
		meta := ingest.Meta{MsgID: rt.MsgID, DeviceID: rt.DeviceID, IMRTimestamp: rt.Timestamp}
		switch f.Cmd {
		case imr.CmdPublishGroup:
			return e.PublishGroup(rt.AppID, rt.Receiver, m, meta), app, nil
		case imr.CmdPublishRoom:
			return e.PublishRoom(rt.AppID, rt.Receiver, m, meta), app, nil
		}
		return e.Publish(rt.AppID, rt.Receiver, m, meta), app, nil
	case imr.CmdPush:
		p, err := imr.ParsePush(f.Body)
		m, err := inner(p.Inner, err)
		if err != nil {
			return ingest.Record{}, appOf{}, err
		}
		if len(p.Receivers) == 0 {
			return ingest.Record{}, appOf{}, nil // nothing to push (imr does nothing either)
		}
		m.Raw = nil // a push is never forwarded: its frame would only cost bytes and base64 on every hop
		return e.Push(p.AppID, p.Receivers, m), appOf{p.AppID, true}, nil
	}
	if len(f.Body) > 0 { // imr fails to parse an unknown command with a body, and closes
		return ingest.Record{}, appOf{}, errors.Join(imr.ErrFrame, errors.New("unknown command "+strconv.Itoa(int(f.Cmd))))
	}
	return ingest.Record{}, appOf{}, nil // imr logs and ignores an empty unknown command
}

// inner parses the inner message of a route body that parsed with err: a
// body error is returned as it is (the connection closes), an inner
// message that does not parse as unroutable (dead-lettered).
func inner(b []byte, err error) (schemas.Message, error) {
	if err != nil {
		return schemas.Message{}, err
	}
	m, err := imr.ParseInner(b)
	if err != nil {
		return m, unroutable{err}
	}
	return m, nil
}

// reject dead-letters a frame whose inner message cannot be routed.
func (c *conn) reject(f imr.Frame, n int64, err error) {
	m := kafka.Message{Topic: "gateway:" + c.id, Offset: n, Key: []byte(c.id), Value: imr.AppendFrame(nil, f)}
	r := stage.Rejected{Msg: m, Code: schemas.ReasonInvalid, Reason: err.Error()}
	if err := c.g.core.Reject(c.ctx, []stage.Rejected{r}); err != nil && c.ctx.Err() == nil {
		c.g.log.Warn("dead-letter write failed", "server", c.id, "err", err)
	}
}

// deliver consumes the server's deliver topic until the connection closes.
func (c *conn) deliver(log *slog.Logger) {
	g := c.g
	topic := g.env.Kafka.Topics.DeliverPrefix + c.id
	if err := g.env.Conn.EnsureTopics(c.ctx, g.env.Kafka.ReplicationFactor, map[string]int{topic: g.env.Kafka.DeliverPartitions}); err != nil {
		if c.ctx.Err() == nil {
			log.Warn("cannot create deliver topic; closing", "topic", topic, "err", err)
			c.close()
		}
		return
	}
	in := stage.Input{Group: g.cfg.Group + "-" + c.id, Topics: []string{topic}, Kind: schemas.KindPublish,
		MaxBatch: 500, MaxWait: 5 * time.Millisecond, Log: g.log.With("server", c.id), Transient: true}
	if err := stage.Consume(c.ctx, g.core, in, c.handleDeliveries); err != nil && c.ctx.Err() == nil {
		log.Warn("deliver consumer stopped; closing", "err", err)
		c.close()
	}
}

// handleDeliveries writes a batch of deliver records as frames; it returns
// only after they were written to the socket, so the offsets are committed
// after delivery.
func (c *conn) handleDeliveries(_ context.Context, b stage.Batch, decoded []stage.Decoded[*schemas.Publish]) ([]stage.Rejected, error) {
	batch := make([]ingest.Delivery, len(decoded))
	for i, d := range decoded {
		batch[i] = ingest.Delivery{Publish: d.Event, Value: d.Msg.Value, Partition: d.Msg.Partition, Offset: d.Msg.Offset}
	}
	fresh, handed := c.seen.Filter(b.Partition, batch)
	var buf []byte
	var written []int64 // the ts of the deliveries written (frames of them)
	frames, others := 0, 0
	for _, d := range fresh {
		if d.Type == schemas.TypePublishBroadcast {
			var n, o int
			buf, n, o = c.appendBroadcast(buf, d.Publish)
			frames, others = frames+n, others+o
			if n > 0 {
				written = append(written, d.TS)
			}
			continue
		}
		if !c.g.ours(d.Receiver) {
			others++
			continue
		}
		buf = appendDelivery(buf, d.Publish)
		frames++
		written = append(written, d.TS)
	}
	if len(buf) > 0 {
		c.wmu.Lock()
		_ = c.nc.SetWriteDeadline(time.Now().Add(c.g.cfg.WriteTimeout))
		_, err := c.nc.Write(buf)
		c.wmu.Unlock()
		if err != nil {
			c.close() // the deliveries stay in Kafka for the next connection
			return nil, err
		}
	}
	handed()
	c.g.m.repeats.Add(float64(len(batch) - len(fresh)))
	c.g.m.delivered.Add(float64(frames))
	c.g.m.others.Add(float64(others))
	e2e, now := c.g.env.Metrics.E2EFor("im_server"), time.Now()
	for _, ts := range written {
		e2e.Observe(ts, now)
	}
	return nil, nil
}

// appendBroadcast appends a broadcast as one publish frame per subscribed
// user of its app (online ones only unless online_only is false) whose
// router this gateway is (gateway.routers), each as a peer message to that
// user, and returns how many frames it appended and how many users it left
// to their routers' gateways; beyond gateway.max_broadcast_users it
// appends nothing and counts and logs the refusal.
func (c *conn) appendBroadcast(dst []byte, p *schemas.Publish) ([]byte, int, int) {
	users, ok := c.audience(p.AppID, p.OnlineUsersOnly(), c.g.cfg.MaxBroadcastUsers)
	if !ok {
		c.g.m.broadcastsRefused.Inc()
		c.g.log.Warn("broadcast refused: more subscribed users of its app than gateway.max_broadcast_users on this connection",
			"server", c.id, "appid", p.AppID, "max", c.g.cfg.MaxBroadcastUsers, "src", p.Src)
		return dst, 0, 0
	}
	c.g.m.broadcasts.Inc()
	inner := innerOf(p)
	n := 0
	for _, uid := range users {
		if c.g.ours(uid) {
			dst = appendRouted(dst, imr.CmdPublish, p, uid, inner)
			n++
		}
	}
	return dst, n, len(users) - n
}

// appendDelivery encodes a deliver record as the frame imr would have
// sent: 132/135/138 with seq, version and flag 0, the route fields, and
// the inner frame byte-for-byte.
func appendDelivery(dst []byte, p *schemas.Publish) []byte {
	cmd := uint8(imr.CmdPublish)
	switch p.Type {
	case schemas.TypePublishGroup:
		cmd = imr.CmdPublishGroup
	case schemas.TypePublishRoom:
		cmd = imr.CmdPublishRoom
	}
	return appendRouted(dst, cmd, p, p.Receiver, innerOf(p))
}

// innerOf is the inner frame of p: as the sending gateway read it, or
// encoded from msg for an event produced by the ingest library.
func innerOf(p *schemas.Publish) []byte {
	if len(p.Msg.Raw) > 0 {
		return p.Msg.Raw
	}
	return imr.AppendInner(nil, p.Msg)
}

// appendRouted appends a route frame cmd of p to receiver, with inner.
func appendRouted(dst []byte, cmd uint8, p *schemas.Publish, receiver int64, inner []byte) []byte {
	body := imr.AppendRoute(nil, imr.Route{AppID: p.AppID, Receiver: receiver, MsgID: p.MsgID,
		DeviceID: p.DeviceID, Timestamp: p.IMRTimestamp, Inner: inner})
	return imr.AppendFrame(dst, imr.Frame{Cmd: cmd, Body: body})
}
