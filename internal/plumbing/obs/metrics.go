package obs

import (
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the metrics every stage shares, labelled by stage. Create one
// per registry and hand it to every stage of the process.
//
//	imstream_consumed_records_total{stage,topic}   records fetched for handling
//	imstream_rejected_records_total{stage,reason}  records sent to the dead-letter topic
//	imstream_skipped_total{stage,reason}           valid records deliberately not acted on
//	imstream_batch_retries_total{stage}            failed batch attempts that were retried
//	imstream_batch_records{stage}                  records per handled batch (histogram)
//	imstream_batch_handle_duration_seconds{stage}           time to handle one batch (histogram)
//	imstream_rebalances_total{stage}               consumer group generations after the first
//	imstream_dead_letters_truncated_total{stage}   dead letters cut to fit the size limit
//	imstream_key_mismatch_total{stage,action}      records keyed against their body (action rejected or accepted)
//	imstream_log_resets_total{stage,topic}         partition logs found started again (re-created topic, emptied broker, other cluster)
//	imstream_committed_offset{stage,topic,partition} last committed offset
//	imstream_e2e_latency_seconds{sink}             origin ts to durable write (histogram)
//	imstream_redis_call_duration_seconds{stage,op}               Redis round trip of one store/sink call (histogram)
//	imstream_redis_errors_total{stage,op}          failed Redis calls
//	imstream_kafka_produce_duration_seconds{stage}          time to get one produce call acknowledged (histogram)
//	imstream_consumer_assigned_partitions{stage}   partitions this process consumes now
//	imstream_batch_stalled_seconds{stage}          how long this process's oldest failing batch has been retried (0: none)
//	imstream_outputs_refused_total{stage,topic}    records the brokers refused for good (too large, invalid); their inputs were dead-lettered
type Metrics struct {
	Consumed    *prometheus.CounterVec
	Rejected    *prometheus.CounterVec
	Skipped     *prometheus.CounterVec
	Retries     *prometheus.CounterVec
	BatchSize   *prometheus.HistogramVec
	HandleTime  *prometheus.HistogramVec
	Rebalances  *prometheus.CounterVec
	LogResets   *prometheus.CounterVec
	Truncated   *prometheus.CounterVec
	KeyMismatch *prometheus.CounterVec
	Committed   *prometheus.GaugeVec
	E2E         *prometheus.HistogramVec
	Redis       *prometheus.HistogramVec
	RedisErrs   *prometheus.CounterVec
	Produce     *prometheus.HistogramVec
	Assigned    *prometheus.GaugeVec
	Stalls      *Stalls // partitions retrying one batch
	Refused     *prometheus.CounterVec

	mu          sync.Mutex
	joined      map[string]bool
	lastRefusal refusal
}

// refusal is the last output the brokers refused.
type refusal struct {
	at                   time.Time
	stage, topic, reason string
	n                    int
}

// OutputRefused counts an output of stage the brokers refused for good
// (its input was dead-lettered), for imstream_outputs_refused_total and
// RefusedSince.
func (m *Metrics) OutputRefused(stage, topic, reason string) {
	m.Refused.WithLabelValues(stage, topic).Inc()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lastRefusal = refusal{at: time.Now(), stage: stage, topic: topic, reason: reason, n: m.lastRefusal.n + 1}
}

// RefusedSince describes the outputs refused after since ("" when none),
// for /readyz's warnings.
func (m *Metrics) RefusedSince(since time.Time) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.lastRefusal
	if r.at.IsZero() || r.at.Before(since) {
		return ""
	}
	return fmt.Sprintf("%d outputs refused by the brokers since start, their inputs dead-lettered (reason output_refused); last at %s by %s on %s: %s",
		r.n, r.at.UTC().Format(time.RFC3339), r.stage, r.topic, r.reason)
}

// NewMetrics creates and registers the shared metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Consumed: CounterVec("imstream_consumed_records_total",
			"Records fetched from Kafka for handling, by stage and topic.", "stage", "topic"),
		Rejected: CounterVec("imstream_rejected_records_total",
			"Records rejected to the dead-letter topic, by stage and reason.", "stage", "reason"),
		Skipped: CounterVec("imstream_skipped_total",
			"Valid records deliberately not acted on, by stage and reason.", "stage", "reason"),
		Retries: CounterVec("imstream_batch_retries_total",
			"Failed batch attempts that were retried after a back-off.", "stage"),
		BatchSize: HistogramVec("imstream_batch_records",
			"Records per handled batch.",
			[]float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000}, "stage"),
		HandleTime: HistogramVec("imstream_batch_handle_duration_seconds",
			"Time to handle one batch, including sink writes.",
			prometheus.ExponentialBuckets(0.0001, 2.5, 14), "stage"),
		Rebalances: CounterVec("imstream_rebalances_total",
			"Consumer group generations joined after the first.", "stage"),
		LogResets: CounterVec("imstream_log_resets_total",
			"Partition logs found to have started again (topic re-created, broker data lost, another cluster); each is read from its beginning as a new incarnation.", "stage", "topic"),
		Truncated: CounterVec("imstream_dead_letters_truncated_total",
			"Dead letters written truncated because the whole record did not fit the size limit (headers say where the original is).", "stage"),
		KeyMismatch: CounterVec("imstream_key_mismatch_total",
			"Records whose Kafka key is not the one their body calls for, by stage and action (rejected to the dead-letter topic, or accepted by schemas.key_mismatch: accept).", "stage", "action"),
		Committed: GaugeVec("imstream_committed_offset",
			"Last offset committed by this process, per partition.", "stage", "topic", "partition"),
		E2E: HistogramVec("imstream_e2e_latency_seconds",
			"Time from the event's origin ts to its durable write, by sink.",
			// Edges at the usual SLO thresholds (50 ms, 200 ms, 1 s), so a
			// quantile near them is not an interpolation across a 2x bucket.
			[]float64{.0005, .001, .002, .003, .005, .0075, .01, .015, .02, .03, .04, .05, .075, .1, .15, .2, .3, .5, .75, 1, 2, 5, 10, 30}, "sink"),
	}
	m.Redis = HistogramVec("imstream_redis_call_duration_seconds",
		"Redis round trip of one store or sink call (one pipeline), by stage and op.",
		prometheus.ExponentialBuckets(0.0001, 2.5, 14), "stage", "op")
	m.RedisErrs = CounterVec("imstream_redis_errors_total",
		"Failed Redis calls, by stage and op (the batch is retried).", "stage", "op")
	m.Produce = HistogramVec("imstream_kafka_produce_duration_seconds",
		"Time until one produce call was acknowledged by the brokers, by stage.",
		prometheus.ExponentialBuckets(0.0005, 2.5, 14), "stage")
	m.Assigned = GaugeVec("imstream_consumer_assigned_partitions",
		"Partitions this process consumes in its current consumer group generation.", "stage")
	m.Stalls = newStalls()
	m.Refused = CounterVec("imstream_outputs_refused_total",
		"Records the brokers refused for a reason no retry fixes (too large, invalid), by stage and topic; the inputs they came from went to the dead-letter topic.", "stage", "topic")
	reg.MustRegister(m.Consumed, m.Rejected, m.Skipped, m.Retries, m.BatchSize, m.HandleTime, m.Rebalances, m.LogResets, m.Truncated, m.KeyMismatch, m.Committed, m.E2E,
		m.Redis, m.RedisErrs, m.Produce, m.Assigned, m.Stalls, m.Refused)
	m.joined = map[string]bool{}
	return m
}

// StageFamilies exports a stage's families at 0, from the moment the
// stage is built (before its consumer runs, which may wait for Kafka),
// with its rejection reasons.
func (m *Metrics) StageFamilies(stage string, reasons ...string) {
	m.Retries.WithLabelValues(stage)
	m.Rebalances.WithLabelValues(stage)
	m.Truncated.WithLabelValues(stage)
	m.BatchSize.WithLabelValues(stage)
	m.HandleTime.WithLabelValues(stage)
	m.Produce.WithLabelValues(stage)
	m.Stalls.stage(stage)
	for _, r := range reasons {
		m.Rejected.WithLabelValues(stage, r)
	}
}

// Known exports a counter's label values at 0 before their first event,
// so dashboards and rate() see the family from the first scrape:
// m.Known(m.Skipped, stage, "unknown_group", "not_pushable").
func (m *Metrics) Known(c *prometheus.CounterVec, stage string, values ...string) {
	for _, v := range values {
		c.WithLabelValues(stage, v)
	}
}

// KnownRedis exports stage's Redis latency and error families at 0 for ops.
func (m *Metrics) KnownRedis(stage string, ops ...string) {
	for _, op := range ops {
		m.Redis.WithLabelValues(stage, op)
		m.RedisErrs.WithLabelValues(stage, op)
	}
}

// KnownSinks exports the end-to-end latency histograms of sinks at 0.
func (m *Metrics) KnownSinks(sinks ...string) {
	for _, s := range sinks {
		m.E2E.WithLabelValues(s)
	}
}

// SetJoined records that stage's consumer joined its group (Joined).
func (m *Metrics) SetJoined(stage string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.joined[stage] = true
}

// Joined reports whether stage's consumer has joined its group (been
// assigned partitions) at least once; /readyz uses it.
func (m *Metrics) Joined(stage string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.joined[stage]
}

// ObserveRedis records one Redis call of stage.
func (m *Metrics) ObserveRedis(stage, op string, d time.Duration, err error) {
	m.Redis.WithLabelValues(stage, op).Observe(d.Seconds())
	errs := m.RedisErrs.WithLabelValues(stage, op) // exported at 0 until the first error
	if err != nil {
		errs.Inc()
	}
}

// E2EFor returns sink's end-to-end latency recorder, for observing a batch
// without looking the label up per event.
func (m *Metrics) E2EFor(sink string) E2ERecorder {
	return E2ERecorder{o: m.E2E.WithLabelValues(sink)}
}

// E2ERecorder records end-to-end latencies of one sink.
type E2ERecorder struct{ o prometheus.Observer }

// Observe records the latency from origin unix-ms ts to now; events
// without ts (0) or with a clock far ahead are ignored.
func (r E2ERecorder) Observe(ts int64, now time.Time) {
	if ts <= 0 {
		return
	}
	d := now.Sub(time.UnixMilli(ts))
	if d < -time.Second {
		return
	}
	r.o.Observe(max(d.Seconds(), 0))
}

// CountBy adds each label's count to c, one label look-up per distinct
// label: for counting a batch by a label that takes few values.
func CountBy[T any](c *prometheus.CounterVec, items []T, label func(T) string) {
	var labels [8]string
	var counts [8]int
	n := 0
	for _, it := range items {
		l := label(it)
		i := 0
		for i < n && labels[i] != l {
			i++
		}
		if i == n {
			if n == len(labels) { // more distinct values than expected: flush
				for j := range n {
					c.WithLabelValues(labels[j]).Add(float64(counts[j]))
				}
				n, i = 0, 0
			}
			labels[i], counts[i] = l, 0
			n++
		}
		counts[i]++
	}
	for j := range n {
		c.WithLabelValues(labels[j]).Add(float64(counts[j]))
	}
}
