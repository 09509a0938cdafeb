// Package status turns the roles' metrics into what an operator reads at a
// glance: per-stage rates, lag per group, end-to-end p99 per sink, present
// users and live servers. `imstream status` feeds it scrapes of the roles'
// admin endpoints; `imstream dev` its own registry.
package status

import (
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Sample is what the processes' metrics said at one moment, merged.
type Sample struct {
	At       time.Time
	Consumed map[string]float64            // stage → records consumed (sum over processes)
	Rejected map[string]float64            // stage → records dead-lettered
	Lag      map[string]float64            // "group topic" → records (per partition the max over processes, summed)
	E2E      map[string]map[float64]uint64 // sink → upper bound → cumulative count (sum over processes)
	Servers  float64                       // live IM servers (max over processes; -1 unknown)
	Users    float64                       // users with presence (max)
	UsersAt  float64                       // when Users was counted, unix s (the newest; 0 unknown)
	Apps     map[string]float64            // "app path" → publish events (fair share's per-app series, summed)
	Held     map[string]float64            // app → lane partitions holding it back (summed)
	// GatewayHeld: app → events held by quota in the gateways (counter,
	// summed); GatewayHolding: events held there now.
	GatewayHeld    map[string]float64
	GatewayHolding float64
}

// FromFamilies merges the metric families of several processes.
func FromFamilies(at time.Time, processes ...[]*dto.MetricFamily) Sample {
	s := Sample{At: at, Consumed: map[string]float64{}, Rejected: map[string]float64{}, Lag: map[string]float64{},
		E2E: map[string]map[float64]uint64{}, Servers: -1, Users: -1, Apps: map[string]float64{}, Held: map[string]float64{},
		GatewayHeld: map[string]float64{}}
	lag := map[string]float64{} // group topic partition → max
	for _, mfs := range processes {
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				l := labels(m)
				switch mf.GetName() {
				case "imstream_consumed_records_total":
					s.Consumed[l["stage"]] += m.GetCounter().GetValue()
				case "imstream_rejected_records_total":
					s.Rejected[l["stage"]] += m.GetCounter().GetValue()
				case "imstream_consumer_lag":
					k := l["group"] + " " + l["topic"] + " " + l["partition"]
					lag[k] = math.Max(lag[k], m.GetGauge().GetValue())
				case "imstream_e2e_latency_seconds":
					b := s.E2E[l["sink"]]
					if b == nil {
						b = map[float64]uint64{}
						s.E2E[l["sink"]] = b
					}
					for _, bk := range m.GetHistogram().GetBucket() {
						if !math.IsInf(bk.GetUpperBound(), 1) { // +Inf is the sample count, added below
							b[bk.GetUpperBound()] += bk.GetCumulativeCount()
						}
					}
					b[math.Inf(1)] += m.GetHistogram().GetSampleCount()
				case "imstream_app_events_total":
					s.Apps[l["app"]+" "+l["path"]] += m.GetCounter().GetValue()
				case "imstream_app_held":
					if v := m.GetGauge().GetValue(); v > 0 {
						s.Held[l["app"]] += v
					}
				case "imstream_gateway_quota_held_total":
					s.GatewayHeld[l["app"]] += m.GetCounter().GetValue()
				case "imstream_gateway_quota_holding":
					s.GatewayHolding += m.GetGauge().GetValue()
				case "imstream_presence_live_servers":
					s.Servers = math.Max(s.Servers, m.GetGauge().GetValue())
				case "imstream_presence_users":
					s.Users = math.Max(s.Users, m.GetGauge().GetValue())
				case "imstream_presence_counted_timestamp_seconds":
					s.UsersAt = math.Max(s.UsersAt, m.GetGauge().GetValue())
				}
			}
		}
	}
	for k, v := range lag {
		gt := k[:strings.LastIndexByte(k, ' ')]
		s.Lag[gt] += v
	}
	return s
}

func labels(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

// Scrape reads one process's /metrics.
func Scrape(c *http.Client, addr string) ([]*dto.MetricFamily, error) {
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s/metrics: %s", addr, resp.Status)
	}
	return Parse(resp.Body)
}

// Parse reads the Prometheus text format.
func Parse(r io.Reader) ([]*dto.MetricFamily, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	m, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, err
	}
	out := make([]*dto.MetricFamily, 0, len(m))
	for _, mf := range m {
		out = append(out, mf)
	}
	return out, nil
}

// Lines describes what happened between prev and cur: records per second
// per stage (and dead letters), lag per group and topic with the time to
// drain it at the current rate (from minDrainLag records), end-to-end p99 per sink over the interval,
// and presence.
func Lines(prev, cur Sample) []string {
	dt := cur.At.Sub(prev.At).Seconds()
	if dt <= 0 {
		dt = 1
	}
	var rates []string
	for _, st := range sortedKeys(cur.Consumed) {
		r := fmt.Sprintf("%s %.0f/s", st, math.Max(cur.Consumed[st]-prev.Consumed[st], 0)/dt)
		if d := cur.Rejected[st] - prev.Rejected[st]; d > 0 {
			r += fmt.Sprintf(" (%.0f dead letters)", d)
		}
		rates = append(rates, r)
	}
	out := []string{"rates   " + orNone(rates)}
	var lags []string
	for _, gt := range sortedKeys(cur.Lag) {
		v := cur.Lag[gt]
		drain := ""
		// A drain estimate at a lag of a few records is noise (it jumps
		// between scrapes): it is shown from minDrainLag up.
		if d := prev.Lag[gt] - v; v >= minDrainLag && d > 0 {
			drain = fmt.Sprintf(", drains in ~%s", (time.Duration(v/(d/dt)) * time.Second).Round(time.Second))
		}
		lags = append(lags, fmt.Sprintf("%s %.0f%s", strings.Replace(gt, " ", "/", 1), v, drain))
	}
	out = append(out, "lag     "+orNone(lags))
	var p99 []string
	for _, sink := range sortedKeys(cur.E2E) {
		if q, n := quantile(prev.E2E[sink], cur.E2E[sink], 0.99); n > 0 {
			p99 = append(p99, fmt.Sprintf("%s %s (%d events)", sink, fmtDur(q), n))
		}
	}
	out = append(out, "e2e p99 "+orNone(p99))
	var pres []string
	if cur.Servers >= 0 {
		pres = append(pres, fmt.Sprintf("%.0f live IM servers", cur.Servers))
	}
	if cur.Users >= 0 {
		// The count is a collection pass's (presence.gc_interval): say when.
		ago := ""
		if cur.UsersAt > 0 {
			ago = fmt.Sprintf(" (counted %s ago)", max(cur.At.Sub(time.Unix(int64(cur.UsersAt), 0)), 0).Round(time.Second))
		}
		pres = append(pres, fmt.Sprintf("%.0f users with presence%s", cur.Users, ago))
	}
	if len(pres) > 0 {
		out = append(out, "presence "+strings.Join(pres, ", "))
	}
	if apps := topApps(prev, cur, dt); apps != "" {
		out = append(out, "apps    "+apps)
	}
	if held := gatewayHeld(prev, cur, dt); held != "" {
		out = append(out, "gateway "+held)
	}
	return out
}

// topApps describes the busiest apps over the interval (fair share's
// per-app series): events per second, and for an app held back, by how
// many lane partitions and its backlog (held and not yet drained).
func topApps(prev, cur Sample, dt float64) string {
	rate := map[string]float64{}
	for k, v := range cur.Apps {
		app, path, _ := strings.Cut(k, " ")
		if path != "drained" { // an event is routed or held once; drained repeats a held one
			rate[app] += math.Max(v-prev.Apps[k], 0) / dt
		}
	}
	apps := sortedKeys(rate)
	sort.SliceStable(apps, func(i, j int) bool { return rate[apps[i]] > rate[apps[j]] })
	var parts []string
	for _, app := range apps {
		if rate[app] < 0.5 && cur.Held[app] == 0 {
			continue
		}
		p := fmt.Sprintf("%s %.0f/s", app, rate[app])
		if h := cur.Held[app]; h > 0 {
			p += fmt.Sprintf(" (held on %.0f partitions, %.0f waiting)", h, math.Max(cur.Apps[app+" held"]-cur.Apps[app+" drained"], 0))
		}
		parts = append(parts, p)
		if len(parts) == 5 {
			break
		}
	}
	return strings.Join(parts, ", ")
}

// gatewayHeld describes the apps the gateways held at their quotas over
// the interval (events per second held, busiest first) and what they hold
// now; "" when they held nothing.
func gatewayHeld(prev, cur Sample, dt float64) string {
	rate := map[string]float64{}
	for app, v := range cur.GatewayHeld {
		if r := math.Max(v-prev.GatewayHeld[app], 0) / dt; r >= 0.5 {
			rate[app] = r
		}
	}
	if len(rate) == 0 && cur.GatewayHolding == 0 {
		return ""
	}
	apps := sortedKeys(rate)
	sort.SliceStable(apps, func(i, j int) bool { return rate[apps[i]] > rate[apps[j]] })
	var parts []string
	for _, app := range apps[:min(len(apps), 5)] {
		parts = append(parts, fmt.Sprintf("%s %.0f/s", app, rate[app]))
	}
	list := strings.Join(parts, ", ")
	if list == "" {
		list = "-"
	}
	return fmt.Sprintf("held at quota: %s; %.0f held now", list, cur.GatewayHolding)
}

// quantile estimates the q-quantile of the events between two cumulative
// bucket snapshots (linear inside a bucket, as histogram_quantile does).
func quantile(prev, cur map[float64]uint64, q float64) (float64, uint64) {
	bounds := make([]float64, 0, len(cur))
	for b := range cur {
		bounds = append(bounds, b)
	}
	sort.Float64s(bounds)
	total := cur[math.Inf(1)] - prev[math.Inf(1)]
	if total == 0 {
		return 0, 0
	}
	rank := q * float64(total)
	lastB, lastC := 0.0, 0.0
	for _, b := range bounds {
		c := float64(cur[b] - prev[b])
		if c >= rank {
			if math.IsInf(b, 1) {
				return lastB, total
			}
			return lastB + (b-lastB)*(rank-lastC)/math.Max(c-lastC, 1), total
		}
		lastB, lastC = b, c
	}
	return lastB, total
}

func fmtDur(s float64) string {
	if s < 1 {
		return fmt.Sprintf("%.1f ms", s*1e3)
	}
	return fmt.Sprintf("%.2f s", s)
}

func orNone(parts []string) string {
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, " | ")
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// minDrainLag is the lag from which Lines estimates the time to drain it.
const minDrainLag = 100
