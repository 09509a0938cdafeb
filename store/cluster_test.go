package store_test

import (
	"testing"

	"github.com/imstream/imstream/internal/tools/testkit"
	"github.com/imstream/imstream/store"
	"github.com/imstream/imstream/store/storetest"
)

// The conformance suites on a 3-master Redis Cluster.
func TestClusterPresence(t *testing.T) {
	if testing.Short() {
		t.Skip("integration")
	}
	c := testkit.StartRedisCluster(t, 3)
	cl := c.Client(t)
	storetest.RunPresence(t, func(t *testing.T) store.PresenceStore {
		c.FlushAll(t, cl)
		return store.NewRedisPresence(cl, "imstream:", storetest.Lease, 0)
	})
	storetest.RunGroups(t, func(t *testing.T) store.GroupStore {
		c.FlushAll(t, cl)
		return store.NewRedisGroups(cl, "imstream:", 0)
	})
}
