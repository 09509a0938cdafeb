// Package devstack starts the infrastructure imstream needs on one machine
// with no set-up: an embedded Kafka broker (kfake, spoken to over TCP like
// any broker, optionally persisted in a data dir) and Redis (a redis-server
// child on a free port, or an in-process server when redis-server is not
// installed). `imstream dev`, `imstream bench` and the integration tests use
// it.
package devstack

import (
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
)

// Kafka is an embedded Kafka cluster (one broker unless asked for more).
type Kafka struct {
	cluster *kfake.Cluster
	Addr    string   // the first broker
	Addrs   []string // every broker
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
	opts := []kfake.Opt{
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
		return nil, fmt.Errorf("devstack: start kafka: %w", err)
	}
	addrs := c.ListenAddrs()
	if len(addrs) == 0 {
		c.Close()
		return nil, fmt.Errorf("devstack: kafka has no listener")
	}
	return &Kafka{cluster: c, Addr: addrs[0], Addrs: addrs}, nil
}

// Close stops the broker (persisting its state when it has a data dir).
func (k *Kafka) Close() { k.cluster.Close() }
