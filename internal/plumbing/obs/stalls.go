package obs

import (
	"fmt"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Stalls tracks partitions whose current batch keeps failing: the consume
// loop reports each failed attempt (with when the batch first failed) and
// the batch's end. It exports imstream_batch_stalled_seconds{stage} — the
// age of the stage's oldest failing batch, 0 when none — and answers the
// readiness check for stuck partitions.
type Stalls struct {
	desc *prometheus.Desc
	mu   sync.Mutex
	by   map[stallKey]stall
	seen map[string]bool // stages to export, at 0 when nothing fails
}

type stallKey struct {
	stage, topic string
	partition    int
}

type stall struct {
	since time.Time
	err   error
}

func newStalls() *Stalls {
	return &Stalls{by: map[stallKey]stall{}, seen: map[string]bool{},
		desc: prometheus.NewDesc("imstream_batch_stalled_seconds",
			"How long the stage's oldest failing batch has been retried (0 when none is): a partition that stays stuck grows it.",
			[]string{"stage"}, nil)}
}

func (s *Stalls) stage(stage string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seen[stage] = true
}

// Set records that stage's batch of topic/partition has failed since since.
func (s *Stalls) Set(stage, topic string, partition int, since time.Time, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.by[stallKey{stage, topic, partition}] = stall{since, err}
}

// Clear records that the batch of topic/partition moved on.
func (s *Stalls) Clear(stage, topic string, partition int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.by, stallKey{stage, topic, partition})
}

// Check fails when a partition's batch has been failing for longer than
// after, naming the oldest such partitions and the last error.
func (s *Stalls) Check(now time.Time, after time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var stuck []string
	for k, v := range s.by {
		if d := now.Sub(v.since); d > after {
			stuck = append(stuck, fmt.Sprintf("%s %s/%d has retried one batch for %s (last error: %v)",
				k.stage, k.topic, k.partition, d.Round(time.Second), v.err))
		}
	}
	if len(stuck) == 0 {
		return nil
	}
	sort.Strings(stuck)
	more := ""
	if len(stuck) > 3 {
		more = " and " + strconv.Itoa(len(stuck)-3) + " more"
		stuck = stuck[:3]
	}
	return fmt.Errorf("stuck partition: %v%s", stuck, more)
}

// Describe implements prometheus.Collector.
func (s *Stalls) Describe(ch chan<- *prometheus.Desc) { ch <- s.desc }

// Collect implements prometheus.Collector.
func (s *Stalls) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	s.mu.Lock()
	oldest := map[string]float64{}
	for st := range s.seen {
		oldest[st] = 0
	}
	for k, v := range s.by {
		oldest[k.stage] = max(oldest[k.stage], now.Sub(v.since).Seconds())
	}
	s.mu.Unlock()
	for st, v := range oldest {
		ch <- prometheus.MustNewConstMetric(s.desc, prometheus.GaugeValue, v, st)
	}
}
