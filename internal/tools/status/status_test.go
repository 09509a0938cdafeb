package status

import (
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
)

func sample(t *testing.T, at time.Time, texts ...string) Sample {
	t.Helper()
	var procs [][]*dto.MetricFamily
	for _, txt := range texts {
		mfs, err := Parse(strings.NewReader(txt))
		if err != nil {
			t.Fatal(err)
		}
		procs = append(procs, mfs)
	}
	return FromFamilies(at, procs...)
}

// proc is one process's metrics: consumed, rejected, lag of two partitions,
// and e2e buckets.
func proc(consumed, rejected, lag0, lag1 float64, fast, total int) string {
	r := strings.NewReplacer("{C}", ftoa(consumed), "{R}", ftoa(rejected), "{L0}", ftoa(lag0), "{L1}", ftoa(lag1), "{F}", itoa(fast), "{T}", itoa(total))
	return r.Replace(`# TYPE imstream_consumed_records_total counter
imstream_consumed_records_total{stage="fanout",topic="imr.publish"} {C}
# TYPE imstream_rejected_records_total counter
imstream_rejected_records_total{stage="fanout",reason="invalid_json"} {R}
# TYPE imstream_consumer_lag gauge
imstream_consumer_lag{group="imstream-fanout",topic="imr.publish",partition="0"} {L0}
imstream_consumer_lag{group="imstream-fanout",topic="imr.publish",partition="1"} {L1}
# TYPE imstream_e2e_latency_seconds histogram
imstream_e2e_latency_seconds_bucket{sink="im_server",le="0.005"} {F}
imstream_e2e_latency_seconds_bucket{sink="im_server",le="0.05"} {T}
imstream_e2e_latency_seconds_bucket{sink="im_server",le="+Inf"} {T}
imstream_e2e_latency_seconds_sum{sink="im_server"} 1
imstream_e2e_latency_seconds_count{sink="im_server"} {T}
# TYPE imstream_presence_live_servers gauge
imstream_presence_live_servers 3
# TYPE imstream_presence_users gauge
imstream_presence_users 73
# TYPE imstream_presence_counted_timestamp_seconds gauge
imstream_presence_counted_timestamp_seconds 970
`)
}

func ftoa(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }
func itoa(i int) string     { return strconv.Itoa(i) }

// TestLines: rates per stage over the interval summed over processes, lag
// per partition de-duplicated across processes (every role exports every
// group's lag) with the time to drain it, p99 over the interval only.
func TestLines(t *testing.T) {
	t0 := time.Unix(1000, 0)
	prev := sample(t, t0, proc(1000, 0, 500, 500, 100, 100), proc(0, 0, 500, 500, 0, 0))
	cur := sample(t, t0.Add(10*time.Second), proc(6000, 2, 250, 250, 100, 200), proc(5000, 1, 250, 250, 0, 0))
	got := strings.Join(Lines(prev, cur), "\n")
	for _, want := range []string{
		"rates   fanout 1000/s (3 dead letters)",
		"lag     imstream-fanout/imr.publish 500, drains in ~10s",
		"e2e p99 im_server 49.6 ms (100 events)",
		"presence 3 live IM servers, 73 users with presence (counted 40s ago)",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in\n%s", want, got)
		}
	}
}

// TestNoDrainEstimateForSmallLag: a lag of a few records gets no time to
// drain (the estimate jumps between scrapes at that size).
func TestNoDrainEstimateForSmallLag(t *testing.T) {
	t0 := time.Unix(1000, 0)
	prev := sample(t, t0, proc(1000, 0, 5, 5, 100, 100))
	cur := sample(t, t0.Add(10*time.Second), proc(6000, 0, 3, 3, 100, 200))
	got := strings.Join(Lines(prev, cur), "\n")
	if strings.Contains(got, "drains in") || !strings.Contains(got, "imstream-fanout/imr.publish 6") {
		t.Errorf("lag of 6 records:\n%s", got)
	}
}

// TestTopApps: the busiest apps by events per second over the interval
// (routed and held; drained ones were counted when held), an app held back
// with its partitions and backlog; idle apps are left out.
func TestTopApps(t *testing.T) {
	t0 := time.Unix(1000, 0)
	prev := sample(t, t0, `# TYPE imstream_app_events_total counter
imstream_app_events_total{app="8",lane="online",path="routed"} 100
imstream_app_events_total{app="8",lane="online",path="held"} 0
imstream_app_events_total{app="7",lane="online",path="routed"} 0
imstream_app_events_total{app="other",lane="online",path="routed"} 5
`)
	cur := sample(t, t0.Add(10*time.Second), `# TYPE imstream_app_events_total counter
imstream_app_events_total{app="8",lane="online",path="routed"} 300
imstream_app_events_total{app="8",lane="online",path="held"} 9800
imstream_app_events_total{app="8",lane="online",path="drained"} 1800
imstream_app_events_total{app="7",lane="online",path="routed"} 2000
imstream_app_events_total{app="other",lane="online",path="routed"} 5
# TYPE imstream_app_held gauge
imstream_app_held{app="8",reason="quota"} 4
imstream_app_held{app="other",reason="quota"} 0
`)
	got := strings.Join(Lines(prev, cur), "\n")
	want := "apps    8 1000/s (held on 4 partitions, 8000 waiting), 7 200/s"
	if !strings.Contains(got, want) {
		t.Errorf("missing %q in\n%s", want, got)
	}
	if strings.Contains(got, "gateway") {
		t.Errorf("a gateway line without gateway quotas:\n%s", got)
	}
}

// TestGatewayHeld: the apps the gateways held at their quotas over the
// interval, busiest first, summed over lanes and gateways, and what they
// hold now.
func TestGatewayHeld(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	prev := sample(t, t0, `# TYPE imstream_gateway_quota_held_total counter
imstream_gateway_quota_held_total{app="8",lane="online"} 1000
imstream_gateway_quota_held_total{app="9",lane="online"} 0
imstream_gateway_quota_held_total{app="other",lane="online"} 0
`)
	cur := sample(t, t0.Add(10*time.Second), `# TYPE imstream_gateway_quota_held_total counter
imstream_gateway_quota_held_total{app="8",lane="online"} 61000
imstream_gateway_quota_held_total{app="8",lane="bulk"} 30000
imstream_gateway_quota_held_total{app="9",lane="online"} 2000
imstream_gateway_quota_held_total{app="other",lane="online"} 0
# TYPE imstream_gateway_quota_holding gauge
imstream_gateway_quota_holding 12345
`, `# TYPE imstream_gateway_quota_held_total counter
imstream_gateway_quota_held_total{app="9",lane="online"} 3000
`)
	got := strings.Join(Lines(prev, cur), "\n")
	want := "gateway held at quota: 8 9000/s, 9 500/s; 12345 held now"
	if !strings.Contains(got, want) {
		t.Errorf("missing %q in\n%s", want, got)
	}
}
