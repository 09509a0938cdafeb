package obs

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/imstream/imstream/internal/kafkax"
)

// Metrics are the metrics every stage shares, labelled by stage. Create one
// per registry and hand it to every stage of the process.
//
//	imstream_consumed_records_total{stage,topic}   records fetched for handling
//	imstream_rejected_records_total{stage,reason}  records sent to the dead-letter topic
//	imstream_skipped_total{stage,reason}           valid records deliberately not acted on
//	imstream_batch_retries_total{stage}            failed batch attempts that were retried
//	imstream_batch_records{stage}                  records per handled batch (histogram)
//	imstream_batch_handle_seconds{stage}           time to handle one batch (histogram)
//	imstream_rebalances_total{stage}               consumer group generations after the first
//	imstream_committed_offset{stage,topic,partition} last committed offset
//	imstream_e2e_latency_seconds{sink}             origin ts to durable write (histogram)
type Metrics struct {
	Consumed   *prometheus.CounterVec
	Rejected   *prometheus.CounterVec
	Skipped    *prometheus.CounterVec
	Retries    *prometheus.CounterVec
	BatchSize  *prometheus.HistogramVec
	HandleTime *prometheus.HistogramVec
	Rebalances *prometheus.CounterVec
	Committed  *prometheus.GaugeVec
	E2E        *prometheus.HistogramVec
}

// NewMetrics creates and registers the shared metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Consumed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imstream_consumed_records_total", Help: "Records fetched from Kafka for handling, by stage and topic.",
		}, []string{"stage", "topic"}),
		Rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imstream_rejected_records_total", Help: "Records rejected to the dead-letter topic, by stage and reason.",
		}, []string{"stage", "reason"}),
		Skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imstream_skipped_total", Help: "Valid records deliberately not acted on, by stage and reason.",
		}, []string{"stage", "reason"}),
		Retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imstream_batch_retries_total", Help: "Failed batch attempts that were retried after a back-off.",
		}, []string{"stage"}),
		BatchSize: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "imstream_batch_records", Help: "Records per handled batch.",
			Buckets: []float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000},
		}, []string{"stage"}),
		HandleTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "imstream_batch_handle_seconds", Help: "Time to handle one batch, including sink writes.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 14),
		}, []string{"stage"}),
		Rebalances: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imstream_rebalances_total", Help: "Consumer group generations joined after the first.",
		}, []string{"stage"}),
		Committed: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "imstream_committed_offset", Help: "Last offset committed by this process, per partition.",
		}, []string{"stage", "topic", "partition"}),
		E2E: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "imstream_e2e_latency_seconds", Help: "Time from the event's origin ts to its durable write, by sink.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"sink"}),
	}
	reg.MustRegister(m.Consumed, m.Rejected, m.Skipped, m.Retries, m.BatchSize, m.HandleTime, m.Rebalances, m.Committed, m.E2E)
	return m
}

// Hooks returns the consume-loop hooks that feed these metrics for stage.
func (m *Metrics) Hooks(stage string) kafkax.Hooks {
	return kafkax.Hooks{
		Fetched: func(topic string, _ int, n int) { m.Consumed.WithLabelValues(stage, topic).Add(float64(n)) },
		Batch: func(_ string, n int, d time.Duration) {
			m.BatchSize.WithLabelValues(stage).Observe(float64(n))
			m.HandleTime.WithLabelValues(stage).Observe(d.Seconds())
		},
		Retry: func(string, error) { m.Retries.WithLabelValues(stage).Inc() },
		Committed: func(topic string, partition int, offset int64) {
			m.Committed.WithLabelValues(stage, topic, strconv.Itoa(partition)).Set(float64(offset))
		},
		Rebalance: func(string) { m.Rebalances.WithLabelValues(stage).Inc() },
	}
}

// ObserveE2E records the latency from origin unix-ms ts to now for sink;
// events without ts (0) or with a clock far ahead are ignored.
func (m *Metrics) ObserveE2E(sink string, ts int64, now time.Time) {
	if ts <= 0 {
		return
	}
	d := now.Sub(time.UnixMilli(ts))
	if d < -time.Second {
		return
	}
	m.E2E.WithLabelValues(sink).Observe(max(d.Seconds(), 0))
}
