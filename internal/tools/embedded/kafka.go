// Package embedded starts the infrastructure imstream needs on one machine
// with no set-up: an embedded Kafka broker (kfake, spoken to over TCP like
// any broker, optionally persisted in a data dir) and Redis (a redis-server
// child on a free port, or an in-process server when redis-server is not
// installed). `imstream dev`, `imstream bench` and the integration tests use
// it.
package embedded

import (
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
)

// Kafka is an embedded Kafka cluster (one broker unless asked for more).
type Kafka struct {
	cluster *kfake.Cluster
	conns   *conns
	Addr    string   // the first broker
	Addrs   []string // every broker
}

// StopBroker stops broker i (0-based, in Addrs order) the way a crashed
// broker stops: its listener closes and so does every connection it holds.
// kfake's RemoveNode alone closes only the listener; clients would go on
// talking to a broker that no longer exists. Node ids follow Addrs order,
// and kfake's controller is the last broker: stopping it breaks topic
// creation for good.
func (k *Kafka) StopBroker(i int) error {
	if err := k.cluster.RemoveNode(int32(i)); err != nil {
		return err
	}
	k.conns.closeAll(k.Addrs[i])
	return nil
}

// StartBroker brings broker i back on its old address, empty of
// connections; partition leaders are shuffled over the brokers again.
func (k *Kafka) StartBroker(i int) error {
	_, port, err := net.SplitHostPort(k.Addrs[i])
	if err != nil {
		return err
	}
	var p int
	fmt.Sscan(port, &p)
	_, _, err = k.cluster.AddNode(int32(i), p)
	return err
}

// conns remembers the connections each listener accepted, so that a broker
// can be stopped with them.
type conns struct {
	mu sync.Mutex
	by map[string]map[net.Conn]struct{} // listen address -> open conns
}

func (cs *conns) listen(network, address string) (net.Listener, error) {
	ln, err := net.Listen(network, address)
	if err != nil {
		return nil, err
	}
	return &trackedListener{Listener: ln, cs: cs, addr: ln.Addr().String()}, nil
}

func (cs *conns) add(addr string, c net.Conn) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.by[addr] == nil {
		cs.by[addr] = map[net.Conn]struct{}{}
	}
	cs.by[addr][c] = struct{}{}
}

func (cs *conns) remove(addr string, c net.Conn) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	delete(cs.by[addr], c)
}

func (cs *conns) closeAll(addr string) {
	cs.mu.Lock()
	open := cs.by[addr]
	delete(cs.by, addr)
	cs.mu.Unlock()
	for c := range open {
		c.Close()
	}
}

type trackedListener struct {
	net.Listener
	cs   *conns
	addr string
}

func (l *trackedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.cs.add(l.addr, c)
	return &trackedConn{Conn: c, forget: func() { l.cs.remove(l.addr, c) }}, nil
}

type trackedConn struct {
	net.Conn
	once   sync.Once
	forget func()
}

func (c *trackedConn) Close() error {
	c.once.Do(c.forget)
	return c.Conn.Close()
}

// Cluster returns the embedded cluster, for tests that move leaders and
// coordinators, remove and add brokers, or inject errors.
func (k *Kafka) Cluster() *kfake.Cluster { return k.cluster }

// KafkaOptions configures StartKafka.
type KafkaOptions struct {
	Port       int         // 0 picks a free port
	Brokers    int         // brokers in the cluster (default 1)
	Ports      []int       // one port per broker (overrides Port)
	DataDir    string      // "" keeps everything in memory
	Partitions int         // default partitions of auto-created topics (default 12)
	Extra      []kfake.Opt // more broker options (TLS, SASL users) for tests
}

// StartKafka starts the broker and returns once it listens.
func StartKafka(o KafkaOptions) (*Kafka, error) {
	if o.Partitions <= 0 {
		o.Partitions = 12
	}
	ports := o.Ports
	if len(ports) == 0 {
		ports = make([]int, max(o.Brokers, 1)) // free ports
		ports[0] = o.Port
	}
	cs := &conns{by: map[string]map[net.Conn]struct{}{}}
	opts := []kfake.Opt{
		kfake.ListenFn(cs.listen),
		kfake.Ports(ports...), // one broker per port
		kfake.AllowAutoTopicCreation(),
		kfake.DefaultNumPartitions(o.Partitions),
		kfake.GroupMinSessionTimeout(time.Second),
	}
	if o.DataDir != "" {
		opts = append(opts, kfake.DataDir(o.DataDir))
	}
	opts = append(opts, o.Extra...)
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("embedded: start kafka: %w", err)
	}
	addrs := c.ListenAddrs()
	if len(addrs) == 0 {
		c.Close()
		return nil, fmt.Errorf("embedded: kafka has no listener")
	}
	return &Kafka{cluster: c, conns: cs, Addr: addrs[0], Addrs: addrs}, nil
}

// Close stops the broker (persisting its state when it has a data dir).
func (k *Kafka) Close() { k.cluster.Close() }
