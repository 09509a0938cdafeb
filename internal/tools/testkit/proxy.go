package testkit

import (
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// Proxy is a TCP proxy that can add latency: the "slow Redis" of the fault
// tests. Every chunk is delayed by Delay in both directions.
type Proxy struct {
	Addr     string
	upstream string
	delay    atomic.Int64
	ln       net.Listener
}

// StartProxy listens on a free loopback port and forwards to upstream.
func StartProxy(t testing.TB, upstream string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{Addr: ln.Addr().String(), upstream: upstream, ln: ln}
	go p.accept()
	t.Cleanup(func() { ln.Close() })
	return p
}

// SetDelay sets the latency added to every chunk (0 turns it off).
func (p *Proxy) SetDelay(d time.Duration) { p.delay.Store(int64(d)) }

func (p *Proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		go p.serve(c)
	}
}

func (p *Proxy) serve(c net.Conn) {
	defer c.Close()
	u, err := net.DialTimeout("tcp", p.upstream, time.Second)
	if err != nil {
		return
	}
	defer u.Close()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				if d := time.Duration(p.delay.Load()); d > 0 {
					time.Sleep(d)
				}
				if _, werr := dst.Write(buf[:n]); werr != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go pipe(u, c)
	go pipe(c, u)
	<-done
	_ = io.Closer(c).Close()
	<-done
}
