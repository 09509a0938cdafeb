package testkit

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/imstream/imstream/internal/tools/embedded"
)

// RedisCluster is a Redis Cluster of redis-server children: masters with
// one replica each.
type RedisCluster struct {
	Nodes []*embedded.Redis
	Addrs []string
}

// StartRedisCluster starts 2×masters nodes and joins them with redis-cli
// --cluster create (one replica per master); it waits until every node
// reports cluster_state:ok.
func StartRedisCluster(t testing.TB, masters int) *RedisCluster {
	t.Helper()
	c := &RedisCluster{}
	for i := 0; i < 2*masters; i++ {
		r := Redis(t, embedded.RedisOptions{Persist: true, Extra: []string{
			"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000"}})
		c.Nodes = append(c.Nodes, r)
		c.Addrs = append(c.Addrs, r.Addr)
	}
	args := append([]string{"--cluster", "create"}, c.Addrs...)
	args = append(args, "--cluster-replicas", "1", "--cluster-yes")
	if out, err := exec.Command("redis-cli", args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	Eventually(t, 30*time.Second, "cluster_state:ok on every node and a replica for every master", func() bool {
		for _, a := range c.Addrs {
			cl := redis.NewClient(&redis.Options{Addr: a})
			info, _ := cl.ClusterInfo(context.Background()).Result()
			//lint:ignore SA1019 CLUSTER SLOTS still answers on Redis 7 and lists each range's master then replicas, which is what the tests read
			slots, _ := cl.ClusterSlots(context.Background()).Result()
			cl.Close()
			if !strings.Contains(info, "cluster_state:ok") || len(slots) < masters {
				return false
			}
			for _, s := range slots {
				if len(s.Nodes) < 2 {
					return false
				}
			}
		}
		return true
	})
	return c
}

// Client returns a cluster client closed at the end of the test.
func (c *RedisCluster) Client(t testing.TB) *redis.ClusterClient {
	cl := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs, MaxRedirects: 8})
	t.Cleanup(func() { _ = cl.Close() })
	return cl
}

// FlushAll empties every master.
func (c *RedisCluster) FlushAll(t testing.TB, cl *redis.ClusterClient) {
	t.Helper()
	if err := cl.ForEachMaster(context.Background(), func(ctx context.Context, m *redis.Client) error {
		return m.FlushAll(ctx).Err()
	}); err != nil {
		t.Fatal(err)
	}
}

// FailoverSlotOf makes the replica of the master serving key take over
// (CLUSTER FAILOVER: the replica catches up, then switches) and waits until
// the cluster routes key to it. It returns the new master's address.
func (c *RedisCluster) FailoverSlotOf(t testing.TB, key string) string {
	t.Helper()
	ctx := context.Background()
	cl := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs})
	defer cl.Close()
	slot, err := cl.ClusterKeySlot(ctx, key).Result()
	if err != nil {
		t.Fatal(err)
	}
	master, replica, ok := c.nodesOf(int(slot))
	if !ok {
		t.Fatalf("no master with a replica for slot %d", slot)
	}
	r := redis.NewClient(&redis.Options{Addr: replica})
	defer r.Close()
	if err := r.ClusterFailover(ctx).Err(); err != nil {
		t.Fatalf("CLUSTER FAILOVER on %s: %v", replica, err)
	}
	Eventually(t, 30*time.Second, fmt.Sprintf("%s to take over slot %d from %s", replica, slot, master), func() bool {
		m, _, _ := c.nodesOf(int(slot))
		return m == replica
	})
	return replica
}

// KillMasterOf SIGKILLs the master serving key — no handover: what it
// acknowledged and had not replicated is gone — and waits until the
// cluster promoted its replica (cluster-node-timeout 2 s). It returns the
// new master's address and restarts the killed node, which rejoins as its
// replica (as an operator or an orchestrator would bring it back).
func (c *RedisCluster) KillMasterOf(t testing.TB, key string) string {
	t.Helper()
	ctx := context.Background()
	cl := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs})
	slot, err := cl.ClusterKeySlot(ctx, key).Result()
	cl.Close()
	if err != nil {
		t.Fatal(err)
	}
	master, replica, ok := c.nodesOf(int(slot))
	if !ok {
		t.Fatalf("no master with a replica for slot %d", slot)
	}
	var via string
	killed := -1
	for i, a := range c.Addrs {
		if a == master {
			if err := c.Nodes[i].Kill(); err != nil {
				t.Fatal(err)
			}
			killed = i
		} else if via == "" {
			via = a
		}
	}
	Eventually(t, 60*time.Second, fmt.Sprintf("%s to take over slot %d from the killed %s", replica, slot, master), func() bool {
		m, _, _ := c.nodesOfVia(via, int(slot))
		return m == replica
	})
	if err := c.Nodes[killed].Start(); err != nil {
		t.Fatal(err)
	}
	return replica
}

// nodesOf returns the master and a replica serving slot, as node 0 sees
// them now (ok is false while the slot has no replica, e.g. mid-failover).
func (c *RedisCluster) nodesOf(slot int) (master, replica string, ok bool) {
	return c.nodesOfVia(c.Addrs[0], slot)
}

// nodesOfVia is nodesOf as the node at addr sees it; after a failover the
// promoted master may have no replica, so replica may be "".
func (c *RedisCluster) nodesOfVia(addr string, slot int) (master, replica string, ok bool) {
	cl := redis.NewClient(&redis.Options{Addr: addr})
	defer cl.Close()
	//lint:ignore SA1019 as in StartRedisCluster
	slots, err := cl.ClusterSlots(context.Background()).Result()
	if err != nil {
		return "", "", false
	}
	for _, s := range slots {
		if slot < int(s.Start) || slot > int(s.End) || len(s.Nodes) == 0 {
			continue
		}
		master = normalize(s.Nodes[0].Addr)
		if len(s.Nodes) > 1 {
			return master, normalize(s.Nodes[1].Addr), true
		}
		return master, "", false
	}
	return "", "", false
}

func normalize(addr string) string {
	host, port, _ := strings.Cut(addr, ":")
	if host == "" {
		host = "127.0.0.1"
	}
	p, _ := strconv.Atoi(port)
	return host + ":" + strconv.Itoa(p)
}
