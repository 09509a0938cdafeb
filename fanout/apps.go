package fanout

import (
	"math"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/imstream/imstream/internal/plumbing/obs"
)

// appMetrics are the per-app series, for the top apps by volume and
// app="other" (fanout.fair_share.top_apps).
type appMetrics struct {
	events *prometheus.CounterVec   // {app, lane, path}
	delay  *prometheus.HistogramVec // {app, lane}
	heldG  *prometheus.GaugeVec     // {app, reason}
	top    *obs.TopApps
}

func newAppMetrics(top int, now func() time.Time) *appMetrics {
	a := &appMetrics{
		events: obs.CounterVec("imstream_app_events_total",
			"Publish events by app (the top apps by volume, the rest as other), lane, and path: routed (at once), held (written to the spill topic), drained (routed from it).", "app", "lane", "path"),
		delay: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "imstream_app_delay_seconds",
			Help:    "Time from an event's ts to its routing by the fanout, by app (top apps, the rest as other) and lane.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300}}, []string{"app", "lane"}),
		heldG: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "imstream_app_held",
			Help: "Lane partitions of this process holding an app back, by app (top apps, the rest as other) and reason (quota, share)."}, []string{"app", "reason"}),
	}
	a.top = obs.NewTopApps(top, now, a.events, a.delay, a.heldG)
	a.zero()
	return a
}

// zero exports the other apps' series at 0, so that the families exist
// from the start.
func (a *appMetrics) zero() {
	for _, lane := range []string{"online", "bulk"} {
		for _, path := range []string{"routed", "held", "drained"} {
			a.events.WithLabelValues(obs.Other, lane, path)
		}
		a.delay.WithLabelValues(obs.Other, lane)
	}
	for _, r := range []string{HeldQuota, HeldShare} {
		a.heldG.WithLabelValues(obs.Other, r)
	}
}

// label is app's label value (obs.TopApps).
func (a *appMetrics) label(app int64, n int) string { return a.top.Label(app, n) }

// routed counts events of one app and lane by path, with their delays
// (ts in unix ms; 0 for none).
func (a *appMetrics) routed(app int64, lane, path string, ts []int64, now time.Time) {
	l := a.label(app, len(ts))
	a.events.WithLabelValues(l, lane, path).Add(float64(len(ts)))
	h := a.delay.WithLabelValues(l, lane)
	for _, t := range ts {
		if t > 0 {
			h.Observe(math.Max(0, now.Sub(time.UnixMilli(t)).Seconds()))
		}
	}
}

// count counts n events of one app and lane by path, without delays (the
// held ones: their delay is the drainer's).
func (a *appMetrics) count(app int64, lane, path string, n int) {
	a.events.WithLabelValues(a.label(app, n), lane, path).Add(float64(n))
}

// held sets the held gauge from the partitions holding each app back.
func (a *appMetrics) held(by map[heldKey]int) {
	sum := map[[2]string]int{}
	for k, n := range by {
		sum[[2]string{a.label(k.app, 0), k.reason}] += n
	}
	a.heldG.Reset()
	a.zero()
	for k, n := range sum {
		a.heldG.WithLabelValues(k[0], k[1]).Set(float64(n))
	}
}
