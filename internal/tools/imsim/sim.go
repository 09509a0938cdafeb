// Package imsim simulates IM servers for `imstream dev` and the load
// generator: each server embeds the ingest library, announces itself, lets
// users connect and leave, joins rooms, sends peer, group and room messages,
// MSG_PUSH and now and then a broadcast, and consumes its own imr.deliver.<server> topic, dropping
// repeats by their src coordinates. An "app backend" creates the groups.
package imsim

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/imstream/imstream/ingest"
	"github.com/imstream/imstream/internal/plumbing/config"
	"github.com/imstream/imstream/internal/plumbing/kafkax"
	"github.com/imstream/imstream/schemas"
)

// Options configures a simulation.
type Options struct {
	AppID          int64 // default 7
	Servers        int   // simulated IM servers (default 3)
	UsersPerServer int   // users homed on each server (default 50)
	Groups         int   // groups of 5–20 users (default 10)
	Rooms          int   // rooms (default 3)
	Rate           int   // messages per second over all servers (default 100)
}

// Stats are running counters of a simulation.
type Stats struct {
	Sent      map[string]int64 // by kind: peer, rt, group, room, push, broadcast, presence
	Delivered map[string]int64 // by server: distinct deliveries received
	Repeats   int64            // deliveries dropped as repeats
	Online    int              // users currently connected
}

// Sim is a running simulation.
type Sim struct {
	o       Options
	cfg     config.Kafka
	conn    *kafkax.Conn
	mu      sync.Mutex
	sent    map[string]*atomic.Int64
	servers []*server
	repeats atomic.Int64
}

type server struct {
	id        string
	p         *ingest.Producer
	users     []int64
	online    map[int64]bool
	delivered atomic.Int64
}

// New prepares a simulation against the brokers of cfg.
func New(cfg config.Kafka, o Options) *Sim {
	defaultTo(&o.AppID, 7)
	defaultTo(&o.Servers, 3)
	defaultTo(&o.UsersPerServer, 50)
	defaultTo(&o.Groups, 10)
	defaultTo(&o.Rooms, 3)
	defaultTo(&o.Rate, 100)
	s := &Sim{o: o, cfg: cfg, conn: kafkax.MustConn(cfg), sent: map[string]*atomic.Int64{}}
	for _, k := range []string{"presence", "peer", "rt", "group", "room", "push", "broadcast"} {
		s.sent[k] = &atomic.Int64{}
	}
	return s
}

// defaultTo sets *p to v when it is the zero value.
func defaultTo[T comparable](p *T, v T) {
	var zero T
	if *p == zero {
		*p = v
	}
}

// Run starts the servers and the traffic and blocks until ctx ends; the
// servers then shut down cleanly (server_down).
func (s *Sim) Run(ctx context.Context) error {
	t := s.cfg.Topics
	topics := map[string]int{t.Presence: s.cfg.Partitions, t.Publish: s.cfg.Partitions, t.Groups: s.cfg.Partitions}
	for i := 0; i < s.o.Servers; i++ {
		topics[t.DeliverPrefix+serverID(i)] = s.cfg.DeliverPartitions
	}
	if err := s.conn.EnsureTopics(ctx, s.cfg.ReplicationFactor, topics); err != nil {
		return err
	}
	if err := s.createGroups(ctx); err != nil {
		return err
	}
	var wg sync.WaitGroup
	for i := 0; i < s.o.Servers; i++ {
		p, err := ingest.New(ctx, ingest.Config{Brokers: s.cfg.Brokers, Server: serverID(i),
			PresenceTopic: t.Presence, PublishTopic: t.Publish, BulkTopic: t.Bulk, HeartbeatInterval: 2 * time.Second, Linger: s.cfg.Linger,
			Transport: s.conn.Transport})
		if err != nil {
			return err
		}
		srv := &server{id: serverID(i), p: p, online: map[int64]bool{}}
		for u := 0; u < s.o.UsersPerServer; u++ {
			srv.users = append(srv.users, int64(1+i*s.o.UsersPerServer+u))
		}
		s.mu.Lock()
		s.servers = append(s.servers, srv)
		s.mu.Unlock()
		if err := p.Start(ctx); err != nil {
			return err
		}
		wg.Add(2)
		go func() { defer wg.Done(); s.consume(ctx, srv) }()
		go func() { defer wg.Done(); s.drive(ctx, srv, int64(i)) }()
	}
	wg.Wait()
	for _, srv := range s.servers {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = srv.p.Close(cctx)
		cancel()
	}
	return nil
}

func serverID(i int) string { return "sim-" + strconv.Itoa(i+1) }

func (s *Sim) createGroups(ctx context.Context) error {
	w := s.conn.NewWriter(s.cfg, s.cfg.Topics.Groups)
	defer w.Close()
	total := s.o.Servers * s.o.UsersPerServer
	rng := rand.New(rand.NewPCG(1, 2))
	var msgs []kafka.Message
	for g := 1; g <= s.o.Groups; g++ {
		members := make([]int64, 5+rng.IntN(16))
		for i := range members {
			members[i] = int64(1 + rng.IntN(total))
		}
		b, _ := json.Marshal(&schemas.Group{Header: schemas.Header{V: 1, Type: schemas.TypeGroupCreate, Server: "sim-backend", AppID: s.o.AppID,
			TS: time.Now().UnixMilli()}, GroupID: int64(g), Members: members})
		msgs = append(msgs, kafka.Message{Key: []byte(fmt.Sprintf("%d:%d", s.o.AppID, g)), Value: b})
	}
	return kafkax.Write(ctx, w, msgs...)
}

// drive connects users and sends traffic from one server.
func (s *Sim) drive(ctx context.Context, srv *server, seed int64) {
	rng := rand.New(rand.NewPCG(uint64(seed), uint64(time.Now().UnixNano())))
	app := s.o.AppID
	for room := 1; room <= s.o.Rooms; room++ {
		if rng.IntN(2) == 0 || room == 1 {
			if srv.p.SubscribeRoom(ctx, app, int64(room)) == nil {
				s.sent["presence"].Add(1)
			}
		}
	}
	for _, u := range srv.users {
		if rng.IntN(10) < 7 { // 70% connect at start
			s.connect(ctx, srv, u, true)
		}
	}
	perTick := max(s.o.Rate/s.o.Servers/10, 1)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	total := int64(s.o.Servers * s.o.UsersPerServer)
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		// churn: one user connects or leaves per tick
		u := srv.users[rng.IntN(len(srv.users))]
		s.mu.Lock()
		on := srv.online[u]
		s.mu.Unlock()
		s.connect(ctx, srv, u, !on)
		for i := 0; i < perTick && ctx.Err() == nil; i++ {
			sender := srv.users[rng.IntN(len(srv.users))]
			to := 1 + rng.Int64N(total)
			var err error
			kind := ""
			switch n := rng.IntN(20); {
			case rng.IntN(400) == 0: // now and then a notice to every online user of the app
				kind = "broadcast"
				err = srv.p.Broadcast(ctx, app, schemas.Message{Cmd: schemas.CmdSystem, Notification: `{"notice":"maintenance at 02:00"}`})
			case n < 10:
				kind = "peer"
				err = srv.p.Publish(ctx, app, to, schemas.Message{Cmd: schemas.CmdIM, Flag: schemas.FlagText, Sender: sender, Receiver: to,
					Timestamp: time.Now().Unix(), Content: fmt.Sprintf(`{"text":"hello %d"}`, to)}, ingest.Meta{})
			case n < 13:
				kind = "rt"
				err = srv.p.Publish(ctx, app, to, schemas.Message{Cmd: schemas.CmdRT, Sender: sender, Receiver: to, Content: "typing"}, ingest.Meta{})
			case n < 16:
				kind = "group"
				g := 1 + rng.Int64N(int64(s.o.Groups))
				err = srv.p.PublishGroup(ctx, app, g, schemas.Message{Cmd: schemas.CmdGroupIM, Sender: sender, Receiver: g, Content: "hi group"}, ingest.Meta{})
			case n < 18:
				kind = "room"
				r := 1 + rng.Int64N(int64(s.o.Rooms))
				err = srv.p.PublishRoom(ctx, app, r, schemas.Message{Cmd: schemas.CmdRoomIM, Sender: sender, Receiver: r, Content: "hi room"}, ingest.Meta{})
			default:
				kind = "push"
				err = srv.p.Push(ctx, app, []int64{to, 1 + rng.Int64N(total)}, schemas.Message{Cmd: schemas.CmdIM, Sender: sender, Receiver: to, Content: "ping"})
			}
			if err == nil {
				s.sent[kind].Add(1)
			}
		}
	}
}

func (s *Sim) connect(ctx context.Context, srv *server, uid int64, on bool) {
	var err error
	if on {
		err = srv.p.Subscribe(ctx, s.o.AppID, uid, true)
	} else {
		err = srv.p.Unsubscribe(ctx, s.o.AppID, uid)
	}
	if err != nil {
		return
	}
	s.sent["presence"].Add(1)
	s.mu.Lock()
	srv.online[uid] = on
	s.mu.Unlock()
}

// consume reads the server's deliver topic, dropping repeats: per source
// partition, a record at or below the highest offset seen is a repeat.
func (s *Sim) consume(ctx context.Context, srv *server) {
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: s.cfg.Brokers, Dialer: s.conn.Dialer, GroupID: "sim-" + srv.id, Topic: s.cfg.Topics.DeliverPrefix + srv.id,
		MinBytes: 1, MaxBytes: 4 << 20, MaxWait: 100 * time.Millisecond, StartOffset: kafka.FirstOffset})
	defer r.Close()
	seen := map[string]int64{}
	for {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			return
		}
		var rec struct {
			Src *schemas.Source `json:"src"`
		}
		if json.Unmarshal(m.Value, &rec) != nil || rec.Src == nil {
			continue
		}
		k := rec.Src.Stream() + ":" + strconv.Itoa(rec.Src.Partition) + ":" + strconv.Itoa(m.Partition)
		if last, ok := seen[k]; ok && rec.Src.Offset <= last {
			s.repeats.Add(1)
			continue
		}
		seen[k] = rec.Src.Offset
		srv.delivered.Add(1)
	}
}

// Stats returns the counters so far.
func (s *Sim) Stats() Stats {
	st := Stats{Sent: map[string]int64{}, Delivered: map[string]int64{}, Repeats: s.repeats.Load()}
	for k, v := range s.sent {
		st.Sent[k] = v.Load()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, srv := range s.servers {
		st.Delivered[srv.id] = srv.delivered.Load()
		for _, on := range srv.online {
			if on {
				st.Online++
			}
		}
	}
	return st
}
