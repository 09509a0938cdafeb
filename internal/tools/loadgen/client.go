// Package loadgen simulates IM servers at load: speaking imr's TCP protocol
// to a gateway (or to an imr), or the ingest library to Kafka; it counts
// what it sent and what arrived (frames on its connections, entries in the
// push lists), lost and doubled.
package loadgen

import (
	"bufio"
	"context"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/imstream/imstream/gateway/imr"
)

// Client is one simulated im_service IM server connected to a router over
// imr's protocol. Like im_service it reconnects when the connection drops
// and replays its subscriptions. Safe for concurrent use.
type Client struct {
	addr, localIP string
	frames        chan imr.Frame

	mu     sync.Mutex
	nc     net.Conn
	w      *bufio.Writer
	subs   map[[2]int64]int8 // (appid, uid) → online
	rooms  map[[2]int64]bool
	gen    int  // connection generation
	closed bool // Close was called: no more reconnects
}

// Dial connects from localIP (e.g. 127.0.0.2; "" lets the kernel choose):
// the gateway names an IM server after its address.
func Dial(ctx context.Context, addr, localIP string) (*Client, error) {
	c := &Client{addr: addr, localIP: localIP, frames: make(chan imr.Frame, 1<<16),
		subs: map[[2]int64]int8{}, rooms: map[[2]int64]bool{}}
	if err := c.connect(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Client) connect(ctx context.Context) error {
	d := net.Dialer{Timeout: 2 * time.Second}
	if c.localIP != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(c.localIP)}
	}
	nc, err := d.DialContext(ctx, "tcp", c.addr)
	if err != nil {
		return err
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		_ = nc.Close()
		return errClosed
	}
	c.nc, c.w = nc, bufio.NewWriterSize(nc, 256<<10)
	c.gen++
	gen := c.gen
	c.mu.Unlock()
	go c.read(ctx, nc, gen)
	return nil
}

// Frames returns the frames the router sent (deliveries).
func (c *Client) Frames() <-chan imr.Frame { return c.frames }

func (c *Client) read(ctx context.Context, nc net.Conn, gen int) {
	r := bufio.NewReaderSize(nc, 256<<10)
	for {
		f, err := imr.ReadFrame(r)
		if err != nil {
			c.reconnect(ctx, gen)
			return
		}
		select {
		case c.frames <- f:
		case <-ctx.Done():
			return
		}
	}
}

// reconnect redials until it succeeds (or ctx ends) and replays the
// subscriptions, as im_service's IM server does.
func (c *Client) reconnect(ctx context.Context, gen int) {
	c.mu.Lock()
	if gen != c.gen || c.nc == nil {
		c.mu.Unlock()
		return
	}
	c.nc.Close()
	c.mu.Unlock()
	for ctx.Err() == nil {
		err := c.connect(ctx)
		if err == nil {
			break
		}
		if errors.Is(err, errClosed) {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.w == nil { // closed, or ctx ended before a connection was made
		return
	}
	for k, online := range c.subs {
		c.writeLocked(imr.CmdSubscribe, imr.AppendSubscribe(nil, imr.Subscribe{AppID: k[0], UID: k[1], Online: online}))
	}
	for k := range c.rooms {
		c.writeLocked(imr.CmdSubscribeRoom, imr.AppendID(nil, imr.ID{AppID: k[0], ID: k[1]}))
	}
	_ = c.w.Flush()
}

var errClosed = errors.New("loadgen: connection closed")

func (c *Client) writeLocked(cmd uint8, body []byte) error {
	if c.w == nil {
		return errClosed
	}
	_, err := c.w.Write(imr.AppendFrame(nil, imr.Frame{Cmd: cmd, Body: body}))
	return err
}

// Send writes one frame (buffered; Flush sends).
func (c *Client) Send(cmd uint8, body []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch cmd {
	case imr.CmdSubscribe:
		if s, err := imr.ParseSubscribe(body); err == nil {
			c.subs[[2]int64{s.AppID, s.UID}] = s.Online
		}
	case imr.CmdUnsubscribe:
		if id, err := imr.ParseID(body); err == nil {
			delete(c.subs, [2]int64{id.AppID, id.ID})
		}
	case imr.CmdSubscribeRoom:
		if id, err := imr.ParseID(body); err == nil {
			c.rooms[[2]int64{id.AppID, id.ID}] = true
		}
	case imr.CmdUnsubscribeRoom:
		if id, err := imr.ParseID(body); err == nil {
			delete(c.rooms, [2]int64{id.AppID, id.ID})
		}
	}
	return c.writeLocked(cmd, body)
}

// Flush sends buffered frames.
func (c *Client) Flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.w.Flush()
}

// Close closes the connection without reconnecting.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	c.closed = true
	if c.nc == nil {
		return nil
	}
	_ = c.w.Flush()
	err := c.nc.Close()
	c.nc, c.w = nil, nil
	return err
}
