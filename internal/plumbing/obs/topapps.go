package obs

import (
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TopApps names the apps of per-app series with bounded cardinality: an
// app among the top N by volume is labelled with its appid, the others
// share the label "other". The ranking is redone every 10 s, volumes
// halved each time; an app that leaves the top has its series deleted from
// the vectors given to NewTopApps (by the label "app").
type TopApps struct {
	mu     sync.Mutex
	top    int
	volume map[int64]float64
	named  map[int64]bool
	ranked time.Time
	now    func() time.Time
	vecs   []interface {
		DeletePartialMatch(prometheus.Labels) int
	}
}

// Other is the label of the apps outside the top.
const Other = "other"

// NewTopApps ranks the top apps by volume; vecs are the vectors whose
// series of an app are deleted when it leaves the top.
func NewTopApps(top int, now func() time.Time, vecs ...interface {
	DeletePartialMatch(prometheus.Labels) int
}) *TopApps {
	return &TopApps{top: top, volume: map[int64]float64{}, named: map[int64]bool{}, now: now, vecs: vecs}
}

// Label adds n to app's volume and returns its label value: its appid
// while among the top apps, else Other.
func (a *TopApps) Label(app int64, n int) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.volume[app] += float64(n)
	if now := a.now(); now.Sub(a.ranked) >= 10*time.Second || (len(a.named) < a.top && !a.named[app]) {
		a.rank(now)
	}
	if a.named[app] {
		return strconv.FormatInt(app, 10)
	}
	return Other
}

func (a *TopApps) rank(now time.Time) {
	apps := make([]int64, 0, len(a.volume))
	for app, v := range a.volume {
		if v < 0.5 {
			delete(a.volume, app)
			continue
		}
		apps = append(apps, app)
	}
	sort.Slice(apps, func(i, j int) bool {
		if a.volume[apps[i]] != a.volume[apps[j]] {
			return a.volume[apps[i]] > a.volume[apps[j]]
		}
		return apps[i] < apps[j]
	})
	named := map[int64]bool{}
	for _, app := range apps[:min(a.top, len(apps))] {
		named[app] = true
	}
	for app := range a.named {
		if !named[app] {
			l := prometheus.Labels{"app": strconv.FormatInt(app, 10)}
			for _, v := range a.vecs {
				v.DeletePartialMatch(l)
			}
		}
	}
	a.named = named
	if now.Sub(a.ranked) >= 10*time.Second {
		for app := range a.volume {
			a.volume[app] /= 2
		}
		a.ranked = now
	}
}
