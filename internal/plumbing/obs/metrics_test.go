package obs

import (
	"fmt"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// CountBy adds exactly what a per-item Inc would, also with more distinct
// labels than its inline table holds.
func TestCountBy(t *testing.T) {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "x_total", Help: "x"}, []string{"l"})
	var items []string
	want := map[string]int{}
	for i := range 1000 {
		l := fmt.Sprint("v", i%3)
		if i%100 == 0 {
			l = fmt.Sprint("rare", i) // ten more distinct values
		}
		items = append(items, l)
		want[l]++
	}
	CountBy(c, items, func(s string) string { return s })
	CountBy(c, items[:0], func(s string) string { return s })
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, m := range fams[0].GetMetric() {
		got[m.GetLabel()[0].GetValue()] = int(m.GetCounter().GetValue())
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("counted %v, want %v", got, want)
	}
}
