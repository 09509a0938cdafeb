package obs

import (
	"context"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/imstream/imstream/internal/plumbing/kafkax"
)

// GroupTopic is one consumer group and the topic it consumes.
type GroupTopic struct{ Group, Topic string }

// LagCollector exports imstream_consumer_lag{group,topic,partition} at
// scrape time from the broker (high watermark minus committed offset), for
// every imstream consumer group, whichever role the process runs: a stuck or
// dead consumer's lag is still visible from its peers.
type LagCollector struct {
	Conn   *kafkax.Conn
	Groups []GroupTopic
	// More, when set, adds groups known only at scrape time: a gateway's
	// connected IM servers' deliver topics.
	More    func() []GroupTopic
	Timeout time.Duration // per scrape; default 3s
	// Log, when set, says why a group's lag could not be read, once when
	// the reason appears or changes, and once when it is read again.
	Log *slog.Logger

	desc, errs *prometheus.Desc
	mu         sync.Mutex
	failing    map[GroupTopic]string // the last error of the groups whose lag could not be read
}

// NewLagCollector returns the collector; register it on the registry.
func NewLagCollector(conn *kafkax.Conn, groups []GroupTopic) *LagCollector {
	return &LagCollector{Conn: conn, Groups: groups, Timeout: 3 * time.Second,
		desc: prometheus.NewDesc("imstream_consumer_lag", "Records a consumer group has not committed yet, per partition (broker high watermark minus committed offset).",
			[]string{"group", "topic", "partition"}, nil),
		errs: prometheus.NewDesc("imstream_consumer_lag_unreadable", "1 when the lag of a group could not be read at this scrape.",
			[]string{"group", "topic"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (l *LagCollector) Describe(ch chan<- *prometheus.Desc) { ch <- l.desc; ch <- l.errs }

// Collect implements prometheus.Collector.
func (l *LagCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), l.Timeout)
	defer cancel()
	groups := l.Groups
	if l.More != nil {
		groups = append(groups[:len(groups):len(groups)], l.More()...)
	}
	for _, g := range groups {
		lag, err := l.Conn.Lag(ctx, g.Group, g.Topic)
		failed := 0.0
		if err != nil {
			failed = 1
		}
		l.logChange(g, err)
		ch <- prometheus.MustNewConstMetric(l.errs, prometheus.GaugeValue, failed, g.Group, g.Topic)
		for p, v := range lag {
			ch <- prometheus.MustNewConstMetric(l.desc, prometheus.GaugeValue, float64(v), g.Group, g.Topic, strconv.Itoa(p))
		}
	}
}

// logChange logs a group's lag becoming unreadable (or for another
// reason) and readable again; scrapes in between log nothing.
func (l *LagCollector) logChange(g GroupTopic, err error) {
	if l.Log == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	prev, was := l.failing[g]
	switch {
	case err != nil && (!was || prev != err.Error()):
		if l.failing == nil {
			l.failing = map[GroupTopic]string{}
		}
		l.failing[g] = err.Error()
		if kafkax.UnknownTopic(err) {
			// At a clean start the roles create the topics a moment after
			// the first scrape can come: not a problem, and no warning.
			l.Log.Info("consumer lag unreadable: the topic does not exist yet (imstream_consumer_lag_unreadable 1)", "group", g.Group, "topic", g.Topic)
			return
		}
		l.Log.Warn("consumer lag unreadable (imstream_consumer_lag_unreadable 1)", "group", g.Group, "topic", g.Topic, "err", err)
	case err == nil && was:
		delete(l.failing, g)
		l.Log.Info("consumer lag readable again", "group", g.Group, "topic", g.Topic)
	}
}
