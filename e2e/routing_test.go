package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/imstream/imstream/ingest"
	"github.com/imstream/imstream/internal/plumbing/config"
	"github.com/imstream/imstream/internal/tools/embedded"
	"github.com/imstream/imstream/internal/tools/testkit"
	"github.com/imstream/imstream/schemas"
)

const app = 7

// stack is a running deployment: broker, Redis and role processes.
type stack struct {
	t      *testing.T
	bin    string
	cfg    config.Config
	admins []string // admin addresses of the presence processes
	fanout []string // admin addresses of the fanout processes
	pusher string   // admin address of the pusher process
	procs  map[string]*testkit.Process
	extra  []string        // flags for every role
	kafka  *embedded.Kafka // the broker, when the stack started it
}

func (s *stack) pusherAdmin() string { return s.pusher }

// start runs a role process and waits until its admin server listens (on
// a free port, found again if a parallel test took it first); it returns
// its admin address and the process.
func (s *stack) start(role string, extra ...string) (string, *testkit.Process) {
	p, addr := testkit.StartOnFreePort(s.t, s.bin, func(addr string) []string {
		return slices.Concat([]string{role,
			"--kafka.brokers", strings.Join(s.cfg.Kafka.Brokers, ","), "--redis.addrs", s.cfg.Redis.Addrs[0], "--kafka.partitions", "4",
			"--consumer.session_timeout", "6s", "--consumer.heartbeat_interval", "500ms", "--consumer.rebalance_timeout", "6s",
			"--presence.lease", "3s", "--presence.server_cache", "0s", "--groups.cache", "0s",
			"--admin.listen", addr}, s.extra, extra)
	})
	if s.procs == nil {
		s.procs = map[string]*testkit.Process{}
	}
	s.procs[role] = p
	return addr, p
}

func startStack(t *testing.T, presences, fanouts int, extra ...string) *stack {
	t.Helper()
	return startStackWith(t, presences, make([][]string, fanouts), extra...)
}

// startStackWith starts one fanout process per element of fanouts, with
// its flags.
func startStackWith(t *testing.T, presences int, fanouts [][]string, extra ...string) *stack {
	t.Helper()
	bin := testkit.Binary(t, "..")
	k := testkit.Kafka(t, embedded.KafkaOptions{})
	r := testkit.Redis(t, embedded.RedisOptions{})
	cfg := testkit.Config(k.Addr, r.Addr)
	cfg.Presence.Lease = 3 * time.Second
	cfg.Presence.ServerCache = 0
	cfg.Groups.Cache = 0
	s := &stack{t: t, bin: bin, cfg: cfg, extra: extra, kafka: k}
	for i := 0; i < presences; i++ {
		a, _ := s.start("presence")
		s.admins = append(s.admins, a)
	}
	for _, flags := range fanouts {
		a, _ := s.start("fanout", flags...)
		s.fanout = append(s.fanout, a)
	}
	s.pusher, _ = s.start("pusher")
	return s
}

// onlineOK asks /online; ok is false when the presence role did not answer.
func (s *stack) onlineOK(uid int64) (online, ok bool) {
	on, _, ok := s.ask(uid)
	return on, ok
}

// online asks /online whether uid is online and on which servers.
func (s *stack) online(t *testing.T, uid int64) (bool, []string) {
	t.Helper()
	on, servers, _ := s.ask(uid)
	return on, servers
}

func (s *stack) ask(uid int64) (online bool, servers []string, ok bool) {
	resp, err := http.Get(fmt.Sprintf("http://%s/online?appid=%d&uid=%d", s.admins[0], app, uid))
	if err != nil {
		return false, nil, false
	}
	defer resp.Body.Close()
	var v struct {
		Online  bool     `json:"online"`
		Servers []string `json:"servers"`
	}
	if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&v) != nil {
		return false, nil, false
	}
	return v.Online, v.Servers, true
}

func imServer(t *testing.T, cfg config.Config, id string, epoch int64) *ingest.Producer {
	t.Helper()
	p, err := ingest.New(context.Background(), ingest.Config{Brokers: cfg.Kafka.Brokers, Server: id, Epoch: epoch,
		CreateTopics: true, Partitions: cfg.Kafka.Partitions, HeartbeatInterval: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return p
}

// closeSilently stops IM servers as a crash does: without server_down.
func closeSilently(ps ...*ingest.Producer) {
	dead, cancel := context.WithCancel(context.Background())
	cancel()
	for _, p := range ps {
		_ = p.Close(dead)
	}
}

// crash stops IM server name (p) without server_down and waits until uid,
// present only there, is no longer online: the server's lease lapsed.
func (s *stack) crash(t *testing.T, p *ingest.Producer, name string, uid int64) {
	t.Helper()
	closeSilently(p)
	testkit.Eventually(t, 30*time.Second, name+"'s lease to lapse", func() bool {
		on, _ := s.online(t, uid)
		return !on
	})
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// result is everything observable at the end of a scenario.
type result struct {
	Online   map[int64]string    // /online answers
	Delivers map[string][]string // server → contents delivered (sorted)
	Lists    map[string][]string // push list → entries (sorted)
}

// runScenario drives every docs/protocol.md §4 row through a stack and returns what
// came out.
func runScenario(t *testing.T, presences, fanouts int) result {
	return runScenarioWith(t, presences, make([][]string, fanouts))
}

func runScenarioWith(t *testing.T, presences int, fanouts [][]string) result {
	s := startStackWith(t, presences, fanouts)
	cfg := s.cfg
	ctx := context.Background()

	// Groups from the app backend: 55 = {1,2,3,4,8}; 66 = {2,4}.
	backend := imServer(t, cfg, "backend", 1)
	testkit.Produce(t, cfg, groupEvents(cfg)...)

	s1, s2, s3 := imServer(t, cfg, "s1", 1), imServer(t, cfg, "s2", 1), imServer(t, cfg, "s3", 1)
	s4 := imServer(t, cfg, "s4", 1)
	must(t, s1.Subscribe(ctx, app, 1, true))
	must(t, s2.Subscribe(ctx, app, 2, false))
	must(t, s1.Subscribe(ctx, app, 3, true))
	must(t, s2.Subscribe(ctx, app, 3, true))
	must(t, s3.Subscribe(ctx, app, 5, true))
	must(t, s4.Subscribe(ctx, app, 6, true))
	must(t, s1.SubscribeRoom(ctx, app, 9))
	must(t, s2.SubscribeRoom(ctx, app, 9))
	testkit.Eventually(t, 60*time.Second, "presence applied", func() bool {
		on5, _ := s.online(t, 5)
		on6, _ := s.online(t, 6)
		on3, srv3 := s.online(t, 3)
		return on5 && on6 && on3 && len(srv3) == 2
	})

	// s3 dies without server_down; s4 restarts with a new epoch.
	closeSilently(s3, s4)
	s4b := imServer(t, cfg, "s4", 2)
	must(t, s4b.Subscribe(ctx, app, 7, true))
	testkit.Eventually(t, 30*time.Second, "s3's lease to run out and s4's new epoch", func() bool {
		on5, _ := s.online(t, 5)
		on6, _ := s.online(t, 6)
		on7, _ := s.online(t, 7)
		return !on5 && !on6 && on7
	})

	im := func(to int64, flag int, tag string) schemas.Message {
		return schemas.Message{Cmd: schemas.CmdIM, Flag: flag, Sender: 1, Receiver: to, Content: tag}
	}
	rt := func(to int64, tag string) schemas.Message {
		return schemas.Message{Cmd: schemas.CmdRT, Sender: 1, Receiver: to, Content: tag}
	}
	up := schemas.FlagUnpersistent
	meta := ingest.Meta{}
	must(t, s2.Publish(ctx, app, 1, im(1, 0, "online-persistent"), meta))
	must(t, s1.Publish(ctx, app, 4, im(4, 0, "offline-persistent"), meta))
	must(t, s1.Publish(ctx, app, 2, im(2, 0, "present-not-online-persistent"), meta))
	must(t, s1.Publish(ctx, app, 3, im(3, up, "online-unpersistent"), meta))
	must(t, s1.Publish(ctx, app, 2, im(2, up, "present-not-online-unpersistent"), meta))
	must(t, s2.Publish(ctx, app, 3, rt(3, "rt-online"), meta))
	must(t, s2.Publish(ctx, app, 4, rt(4, "rt-offline"), meta))
	must(t, s1.Publish(ctx, app, 4, schemas.Message{Cmd: schemas.CmdSystem, Notification: "system-offline"}, meta))
	must(t, s1.Publish(ctx, app, 4, schemas.Message{Cmd: schemas.CmdCustomer, CustomerAppID: 3, CustomerID: 30, StoreID: 31, SellerID: 32, Content: "customer"}, meta))
	must(t, s1.Publish(ctx, app, 4, schemas.Message{Cmd: schemas.CmdCustomerSupport, CustomerAppID: 3, CustomerID: 30, StoreID: 31, SellerID: 32, Content: "support"}, meta))
	must(t, s1.Publish(ctx, app, 4, schemas.Message{Cmd: schemas.CmdCustomerV2, SenderAppID: 3, Sender: 30, ReceiverAppID: app, Receiver: 4, Content: "customer-v2"}, meta))
	must(t, s1.PublishGroup(ctx, app, 55, schemas.Message{Cmd: schemas.CmdGroupIM, Sender: 4, Receiver: 55, Content: "group-im"}, meta))
	must(t, s1.PublishGroup(ctx, app, 77, schemas.Message{Cmd: schemas.CmdGroupIM, Sender: 4, Receiver: 77, Content: "unknown-group"}, meta))
	must(t, s1.PublishGroup(ctx, app, 66, schemas.Message{Cmd: schemas.CmdSyncGroupNotify, GroupID: 66, SyncKey: 1}, meta))
	must(t, s2.PublishGroup(ctx, app, 66, schemas.Message{Cmd: schemas.CmdSyncGroupNotify, GroupID: 66, SyncKey: 2}, meta))
	must(t, s1.PublishRoom(ctx, app, 9, schemas.Message{Cmd: schemas.CmdRoomIM, Sender: 1, Receiver: 9, Content: "room"}, meta))
	must(t, s1.Push(ctx, app, []int64{1, 4, 8}, im(4, 0, "msg-push")))
	must(t, s1.Push(ctx, app, []int64{1, 2, 4}, schemas.Message{Cmd: schemas.CmdGroupIM, Sender: 1, Receiver: 55, Content: "msg-push-group"}))
	must(t, s1.Publish(ctx, app, 5, im(5, up, "dead-server-user"), meta))
	must(t, s1.Publish(ctx, app, 6, im(6, 0, "old-epoch-user"), meta))
	must(t, s1.Publish(ctx, app, 7, im(7, up, "new-epoch-user"), meta))

	testkit.WaitCaughtUp(t, cfg, cfg.Fanout.Group, cfg.Kafka.Topics.Publish, 60*time.Second)
	testkit.WaitCaughtUp(t, cfg, cfg.Pusher.Group, cfg.Kafka.Topics.Push, 60*time.Second)

	res := result{Online: map[int64]string{}, Delivers: map[string][]string{}, Lists: map[string][]string{}}
	for uid := int64(1); uid <= 8; uid++ {
		on, servers := s.online(t, uid)
		res.Online[uid] = fmt.Sprint(on, servers)
	}
	for _, srv := range []string{"s1", "s2", "s3", "s4"} {
		for _, m := range testkit.ReadAll(t, cfg, cfg.Kafka.Topics.DeliverPrefix+srv) {
			var rec schemas.Publish
			if err := json.Unmarshal(m.Value, &rec); err != nil || rec.Src == nil || rec.Src.Topic != cfg.Kafka.Topics.Publish {
				t.Fatalf("deliver record without src: %s", m.Value)
			}
			tag := rec.Msg.Content
			if rec.Msg.Cmd == schemas.CmdSyncGroupNotify {
				tag = fmt.Sprintf("sync-%d-from-%s", rec.Msg.SyncKey, rec.Server)
			}
			res.Delivers[srv] = append(res.Delivers[srv], tag)
		}
		sort.Strings(res.Delivers[srv])
	}
	rc := testkit.RedisClient(t, cfg.Redis.Addrs[0])
	for _, l := range []string{"push_queue", "group_push_queue", "system_push_queue", "customer_push_queue", "customer_push_queue_v2"} {
		res.Lists[l] = rc.LRange(ctx, l, 0, -1).Val()
		sort.Strings(res.Lists[l])
	}
	for _, p := range []*ingest.Producer{backend, s1, s2, s4b} {
		_ = p.Close(ctx)
	}
	// Every process of a scaled-out role took part.
	for _, a := range s.fanout {
		if v := metric(t, []string{a}, `imstream_consumed_records_total{stage="fanout",topic="imr.publish"}`) +
			metric(t, []string{a}, `imstream_consumed_records_total{stage="fanout",topic="imr.publish.bulk"}`); v == 0 {
			t.Errorf("fanout %s consumed nothing", a)
		}
	}
	for _, a := range s.admins {
		if v := metric(t, []string{a}, `imstream_consumed_records_total{stage="presence",topic="imr.presence"}`); v == 0 {
			t.Errorf("presence %s consumed nothing", a)
		}
	}
	// The unknown group was counted.
	if v := metric(t, s.fanout, `imstream_skipped_total{reason="unknown_group",stage="fanout"}`); v != 1 {
		t.Errorf("unknown_group skips = %v, want 1", v)
	}
	return res
}

func groupEvents(cfg config.Config) []kafkaMessage {
	ev := func(gid int64, members []int64) kafkaMessage {
		b, _ := json.Marshal(&schemas.Group{Header: schemas.Header{V: 1, Type: schemas.TypeGroupCreate, Server: "backend", AppID: app}, GroupID: gid, Members: members})
		return kafkaMessage{Topic: cfg.Kafka.Topics.Groups, Key: []byte(fmt.Sprintf("%d:%d", app, gid)), Value: b}
	}
	return []kafkaMessage{ev(55, []int64{1, 2, 3, 4, 8}), ev(66, []int64{2, 4})}
}

// metric sums a sample over the processes' /metrics.
func metric(t *testing.T, admins []string, sample string) float64 {
	t.Helper()
	total := 0.0
	for _, a := range admins {
		for _, line := range strings.Split(testkit.MetricsText(t, a), "\n") {
			if strings.HasPrefix(line, sample+" ") {
				v, _ := strconv.ParseFloat(strings.TrimPrefix(line, sample+" "), 64)
				total += v
			}
		}
	}
	return total
}

func expected() result {
	entry := func(to int64, content string) string {
		return fmt.Sprintf(`{"appid":7,"content":%q,"receiver":%d,"sender":1}`, content, to)
	}
	r := result{
		Online: map[int64]string{
			1: "true [s1]", 2: "false [s2]", 3: "true [s1 s2]", 4: "false []", 5: "false []", 6: "false []", 7: "true [s4]", 8: "false []",
		},
		Delivers: map[string][]string{
			"s1": {"rt-online"},
			"s2": {"online-unpersistent", "present-not-online-unpersistent", "room", "sync-1-from-s1"},
			"s3": nil,
			"s4": {"new-epoch-user"},
		},
		Lists: map[string][]string{
			"push_queue": {
				entry(2, "present-not-online-persistent"), entry(2, "present-not-online-unpersistent"),
				entry(4, "msg-push"), entry(4, "offline-persistent"), entry(5, "dead-server-user"),
				entry(6, "old-epoch-user"), entry(8, "msg-push"),
			},
			"group_push_queue": {
				`{"appid":7,"content":"group-im","group_id":55,"receivers":[2,8],"sender":4}`,
				`{"appid":7,"content":"msg-push-group","group_id":55,"receivers":[2,4],"sender":1}`,
			},
			"system_push_queue": {`{"appid":7,"content":"system-offline","receiver":4}`},
			"customer_push_queue": {
				`{"appid":7,"command":24,"content":"customer","customer":30,"customer_appid":3,"receiver":4,"seller":32,"store":31}`,
				`{"appid":7,"command":25,"content":"support","customer":30,"customer_appid":3,"receiver":4,"seller":32,"store":31}`,
			},
			"customer_push_queue_v2": {`{"appid":7,"content":"customer-v2","receiver":4,"receiver_appid":7,"sender":30,"sender_appid":3}`},
		},
	}
	for _, l := range r.Lists {
		sort.Strings(l)
	}
	return r
}

func compare(t *testing.T, got, want result) {
	t.Helper()
	for uid, w := range want.Online {
		if got.Online[uid] != w {
			t.Errorf("/online uid %d = %s, want %s", uid, got.Online[uid], w)
		}
	}
	for srv, w := range want.Delivers {
		if !reflect.DeepEqual(got.Delivers[srv], w) {
			t.Errorf("deliveries to %s = %q, want %q", srv, got.Delivers[srv], w)
		}
	}
	for l, w := range want.Lists {
		if !reflect.DeepEqual(got.Lists[l], w) {
			t.Errorf("%s =\n%s\nwant\n%s", l, strings.Join(got.Lists[l], "\n"), strings.Join(w, "\n"))
		}
	}
}

// TestRouting covers every row of docs/protocol.md §4 end to end, and checks that
// /online agrees with the fanout's decisions.
func TestRouting(t *testing.T) {
	got := runScenario(t, 1, 1)
	compare(t, got, expected())
	// /online and the fanout agree: a user /online calls online never got a
	// push entry; one it calls offline got one for each persistent message.
	for uid, on := range got.Online {
		pushed := false
		for _, e := range got.Lists["push_queue"] {
			if strings.Contains(e, fmt.Sprintf(`"receiver":%d,`, uid)) {
				pushed = true
			}
		}
		if strings.HasPrefix(on, "true") && pushed {
			t.Errorf("user %d is online per /online but got a push entry", uid)
		}
	}
}

// TestRoutingScaledOut: two presence and two fanout processes in one
// consumer group end in the same state as one of each.
func TestRoutingScaledOut(t *testing.T) {
	if testing.Short() {
		t.Skip("integration")
	}
	one := runScenario(t, 1, 1)
	two := runScenario(t, 2, 2)
	compare(t, two, one)
	compare(t, two, expected())
}

// TestRoutingLanesApart: the lanes deployed apart — one fanout process
// per lane in one consumer group (fanout.lanes) — route as one process
// consuming both: each lane's partitions go only to the process that
// consumes it.
func TestRoutingLanesApart(t *testing.T) {
	if testing.Short() {
		t.Skip("integration")
	}
	got := runScenarioWith(t, 1, [][]string{{"--fanout.lanes", "online"}, {"--fanout.lanes", "bulk"}})
	compare(t, got, expected())
}
