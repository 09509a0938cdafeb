package pusher

import (
	"context"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// lists returns every list this pusher writes: the five of docs/protocol.md §5 and the
// suffixed ones of the ROM apps.
func (p *Pusher) lists() []string {
	ls := []string{ListPeer, ListGroup, ListCustomer, ListCustomerV2, ListSystem}
	for _, a := range p.cfg.ROMApps {
		id := strconv.FormatInt(a, 10)
		ls = append(ls, ListPeer+"_"+id, ListGroup+"_"+id, ListCustomerV2+"_"+id)
	}
	return ls
}

var listLengthDesc = prometheus.NewDesc("imstream_push_list_length",
	"Entries waiting in a push list (LLEN at scrape time): growth means the push service falls behind.", []string{"list"}, nil)

// listLengths reads the lists' lengths at scrape time (one pipeline).
type listLengths struct {
	rc    redis.UniversalClient
	lists []string
}

func (l *listLengths) Describe(ch chan<- *prometheus.Desc) { ch <- listLengthDesc }

func (l *listLengths) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	pipe := l.rc.Pipeline()
	cmds := make([]*redis.IntCmd, len(l.lists))
	for i, name := range l.lists {
		cmds[i] = pipe.LLen(ctx, name)
	}
	_, _ = pipe.Exec(ctx)
	for i, c := range cmds {
		if n, err := c.Result(); err == nil {
			ch <- prometheus.MustNewConstMetric(listLengthDesc, prometheus.GaugeValue, float64(n), l.lists[i])
		}
	}
}
