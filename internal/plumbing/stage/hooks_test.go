package stage

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/imstream/imstream/internal/plumbing/obs"
)

// TestSeriesOfGonePartitions: a partition this consumer lost in a
// rebalance drops its committed-offset series; a transient consumer's
// topics drop theirs when it ends; the assigned gauge counts every topic.
func TestSeriesOfGonePartitions(t *testing.T) {
	m := obs.NewMetrics(prometheus.NewRegistry())
	h := hooks(m, "gateway")
	h.Fetched("t", 0, 3)
	h.Committed("t", 0, 5)
	h.Committed("t", 1, 6)
	h.Committed("u", 0, 7)
	h.Assigned("g", "t", []int{1})
	h.Assigned("g", "u", []int{0, 2})
	if got := testutil.CollectAndCount(m.Committed); got != 2 {
		t.Fatalf("%d committed-offset series after t/0 was revoked, want 2 (t/1, u/0)", got)
	}
	if got := testutil.ToFloat64(m.Assigned.WithLabelValues("gateway")); got != 3 {
		t.Errorf("assigned partitions %v, want 3 over both topics", got)
	}
	forget(m, "gateway", []string{"t"})
	if got := testutil.CollectAndCount(m.Committed); got != 1 {
		t.Errorf("%d committed-offset series after t's consumer ended, want 1", got)
	}
	if got := testutil.CollectAndCount(m.Consumed); got != 0 {
		t.Errorf("%d consumed series after t's consumer ended, want 0", got)
	}
}
