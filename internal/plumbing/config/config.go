// Package config holds imstream's configuration: Default() gives every
// default, package load reads a YAML file, IMSTREAM_* environment variables
// and flags over it (viper), and Validate names the key that is wrong.
//
// Environment variables map keys with "." replaced by "_":
// kafka.brokers → IMSTREAM_KAFKA_BROKERS (comma separated lists).
package config

import (
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"time"

	"github.com/go-viper/mapstructure/v2"
)

// Config is the whole configuration; every role reads the parts it needs.
type Config struct {
	Kafka    Kafka    `mapstructure:"kafka"`
	Redis    Redis    `mapstructure:"redis"`
	Schemas  Schemas  `mapstructure:"schemas"`
	Presence Presence `mapstructure:"presence"`
	Groups   Groups   `mapstructure:"groups"`
	Fanout   Fanout   `mapstructure:"fanout"`
	Pusher   Pusher   `mapstructure:"pusher"`
	Gateway  Gateway  `mapstructure:"gateway"`
	Consumer Consumer `mapstructure:"consumer"`
	Admin    Admin    `mapstructure:"admin"`
	Log      Log      `mapstructure:"log"`
	Shutdown Shutdown `mapstructure:"shutdown"`
}

// Shutdown configures how a process stops.
type Shutdown struct {
	// Grace: after SIGTERM a process finishes and commits what it can, and
	// exits when this runs out whatever Kafka or Redis do (what it had not
	// committed is replayed by the next owner; a gateway logs the events it
	// read but could not produce).
	Grace time.Duration `mapstructure:"grace"` // default 10s
}

// Topics names the topics (docs/protocol.md §1).
type Topics struct {
	Presence      string `mapstructure:"presence"`       // default imr.presence
	Publish       string `mapstructure:"publish"`        // default imr.publish: the online lane
	Bulk          string `mapstructure:"bulk"`           // default imr.publish.bulk: the bulk lane (push events); = publish for one lane
	Groups        string `mapstructure:"groups"`         // default imr.groups
	Push          string `mapstructure:"push"`           // default imr.push
	Spill         string `mapstructure:"spill"`          // default imr.publish.spill: an app's events held back by fair share (docs/lanes.md)
	DLQ           string `mapstructure:"dlq"`            // default imr.dlq
	DeliverPrefix string `mapstructure:"deliver_prefix"` // default "imr.deliver."
}

// OneLane reports whether bulk and online share one topic (kafka.topics.bulk
// set to kafka.topics.publish: an imstream that predates lanes).
func (t Topics) OneLane() bool { return t.Bulk == t.Publish }

// IsBulkLane reports whether topic is the bulk lane, apart from the online one.
func (t Topics) IsBulkLane(topic string) bool { return topic == t.Bulk && !t.OneLane() }

// Lanes returns the publish lanes' topics: publish, and bulk unless OneLane.
func (t Topics) Lanes() []string {
	if t.OneLane() {
		return []string{t.Publish}
	}
	return []string{t.Publish, t.Bulk}
}

// Kafka configures the brokers, producers and topic creation.
type Kafka struct {
	Brokers          []string `mapstructure:"brokers"`   // default [localhost:9092]
	ClientID         string   `mapstructure:"client_id"` // default imstream
	Topics           Topics   `mapstructure:"topics"`
	AutoCreateTopics bool     `mapstructure:"auto_create_topics"` // default true: create missing topics at start
	Partitions       int      `mapstructure:"partitions"`         // default 12: partitions of topics imstream creates
	// TopicPartitions overrides Partitions for the topics it names
	// (kafka.topics' values, e.g. {imr.push: 12}), for topics created by
	// imstream. A consumer group's processes share a topic's partitions,
	// so a role's useful replicas are capped by them: docs/capacity.md.
	TopicPartitions   map[string]int `mapstructure:"topic_partitions"`
	DeliverPartitions int            `mapstructure:"deliver_partitions"` // default 4: partitions of imr.deliver.<server>
	ReplicationFactor int            `mapstructure:"replication_factor"` // default 1
	Linger            time.Duration  `mapstructure:"linger"`             // default 2ms: how long a producer waits to fill a batch
	BatchSize         int            `mapstructure:"batch_size"`         // default 1000: records per produce batch
	WriteTimeout      time.Duration  `mapstructure:"write_timeout"`      // default 10s
	// MaxRecordBytes bounds every record imstream writes itself (push
	// jobs, deliver records, dead letters): larger outputs are split, so
	// none reaches the brokers' message.max.bytes (1 MiB by default). The
	// pusher reads imstream's own records up to this size (third-party
	// records: schemas.max_bytes). Default 262144.
	MaxRecordBytes int `mapstructure:"max_record_bytes"`
	// InternalFormat is the format of the records imstream writes for its
	// own stages: the gateway's events and the fanout's push jobs.
	// "binary" (the default) is the Protocol Buffers encoding of
	// docs/protocol.md §2, named by the record header "format"; "json"
	// writes them as third-party producers do. Readers take either,
	// record by record.
	InternalFormat string `mapstructure:"internal_format"`
	// Compression of the record batches imstream produces: none (the
	// default), lz4, zstd, snappy or gzip. Consumers read any.
	Compression string `mapstructure:"compression"`
	TLS         TLS    `mapstructure:"tls"`
	SASL        SASL   `mapstructure:"sasl"`
}

// PartitionsOf is how many partitions topic gets when imstream creates it:
// its kafka.topic_partitions entry, else kafka.partitions.
func (k Kafka) PartitionsOf(topic string) int {
	if n, ok := k.TopicPartitions[topic]; ok {
		return n
	}
	return k.Partitions
}

// Binary reports whether InternalFormat is the binary format.
func (k Kafka) Binary() bool { return k.InternalFormat == "binary" }

// Redis configures the Redis holding presence, groups and the push lists.
type Redis struct {
	Addrs        []string      `mapstructure:"addrs"`         // default [localhost:6379]
	Cluster      bool          `mapstructure:"cluster"`       // default false: use Redis Cluster
	Username     string        `mapstructure:"username"`      // default "": ACL user
	Password     string        `mapstructure:"password"`      // default ""
	DB           int           `mapstructure:"db"`            // default 0 (not with cluster)
	PoolSize     int           `mapstructure:"pool_size"`     // default 0: go-redis default (10 per CPU)
	DialTimeout  time.Duration `mapstructure:"dial_timeout"`  // default 2s
	ReadTimeout  time.Duration `mapstructure:"read_timeout"`  // default 3s
	WriteTimeout time.Duration `mapstructure:"write_timeout"` // default 3s
	KeyPrefix    string        `mapstructure:"key_prefix"`    // default "imstream:": prefix of imstream's own keys (not the push lists)
	WaitReplicas int           `mapstructure:"wait_replicas"` // default 0: after each push-list write, WAIT until this many replicas of the master acknowledged it (else retry)
	WaitTimeout  time.Duration `mapstructure:"wait_timeout"`  // default 1s: how long one WAIT may take
	TLS          TLS           `mapstructure:"tls"`
}

// Schemas configures event validation.
type Schemas struct {
	MaxBytes int `mapstructure:"max_bytes"` // default 65536: larger records go to the dead-letter topic
	// KeyMismatch: what a stage does with a record whose key is not the one
	// its body calls for: "reject" (default: dead letter, reason
	// key_mismatch) or "accept" (applied and counted).
	KeyMismatch string `mapstructure:"key_mismatch"`
}

// Consumer configures the consume loop shared by every role.
type Consumer struct {
	SessionTimeout    time.Duration `mapstructure:"session_timeout"`    // default 10s
	HeartbeatInterval time.Duration `mapstructure:"heartbeat_interval"` // default 1s
	RebalanceTimeout  time.Duration `mapstructure:"rebalance_timeout"`  // default 10s
	RetryMin          time.Duration `mapstructure:"retry_min"`          // default 50ms: first back-off after a failed batch
	RetryMax          time.Duration `mapstructure:"retry_max"`          // default 5s: longest back-off
	QueueSize         int           `mapstructure:"queue_size"`         // default 4096: fetched records buffered per partition
	MaxFetchBytes     int           `mapstructure:"max_fetch_bytes"`    // default 4 MiB
	CommitInterval    time.Duration `mapstructure:"commit_interval"`    // default 100ms: offsets of all assigned partitions are committed together at most this often
}

// Presence configures the presence stage and the presence store.
type Presence struct {
	Group       string        `mapstructure:"group"`        // default imstream-presence: consumer group
	BatchSize   int           `mapstructure:"batch_size"`   // default 1000: events per Redis pipeline
	Lease       time.Duration `mapstructure:"lease"`        // default 30s: a server that does not heartbeat for this long is dead
	ServerCache time.Duration `mapstructure:"server_cache"` // default 500ms: how stale a reader's view of server states may be
	GCInterval  time.Duration `mapstructure:"gc_interval"`  // default 1m: how often stale entries are collected; 0 disables
	// EpochSkew: an epoch is a server's start time in unix milliseconds (or
	// any smaller increasing number); an event whose epoch is further ahead
	// of the presence stage's clock than this is rejected (reason
	// epoch_ahead), since it would void every later real epoch of its server.
	EpochSkew time.Duration `mapstructure:"epoch_skew"` // default 5m
}

// Groups configures the group store stage and the group cache.
type Groups struct {
	Group     string        `mapstructure:"group"`      // default imstream-groups: consumer group
	BatchSize int           `mapstructure:"batch_size"` // default 1000: events per batch
	Cache     time.Duration `mapstructure:"cache"`      // default 1s: a cached group is served this long without checking its version
}

// Fanout configures the routing stage.
type Fanout struct {
	Group     string `mapstructure:"group"`      // default imstream-fanout: consumer group
	BatchSize int    `mapstructure:"batch_size"` // default 500: events per batch (one presence look-up pipeline)
	// SyncGroupNotifyAll forwards SYNC_GROUP_NOTIFY to every live server,
	// as im_service does, instead of only the servers where a member is
	// present. Default false.
	SyncGroupNotifyAll bool `mapstructure:"sync_group_notify_all"`
	// BatchPushJobs writes the push jobs of one batch and source partition
	// as one imr.push record (type push_jobs, up to schemas.max_bytes), so
	// the pusher reads one record per batch instead of one per job.
	// Pushers before this release cannot read such records (they
	// dead-letter them): set false while they are being upgraded. Default
	// true.
	BatchPushJobs bool `mapstructure:"batch_push_jobs"`
	// GroupChunk is how many members the fanout looks up in one pipeline,
	// and the size above which a group is big: a GROUP_IM to a big group
	// is not looked up member by member in the fanout (which would hold
	// its partition) but written as push jobs naming uid ranges of this
	// many members each, which the pusher resolves to the members offline
	// when it writes (docs/topics.md). Default 2000.
	GroupChunk int `mapstructure:"group_chunk"`
	// Lanes are the lanes this process consumes: "online"
	// (kafka.topics.publish), "bulk" (kafka.topics.bulk), or both (the
	// default). Processes of one consumer group may consume different
	// lanes: each lane's partitions are shared among the processes that
	// consume it, so the lanes can be deployed apart and the online one
	// given its own CPU (docs/lanes.md). Every lane needs a process.
	Lanes []string `mapstructure:"lanes"`
	// FairShare holds an app back when it takes more than its share of a
	// partition, or more than its quota: its events wait in the spill
	// topic, in order, and are routed from there at its rate
	// (docs/lanes.md).
	FairShare FairShare `mapstructure:"fair_share"`
	// Traceparent is which W3C traceparent header the fanout puts on the
	// deliver and push_job records it derives from an event: "producer"
	// (the default) carries the one the event's producer set, if any;
	// "derived" gives every output one, the producer's or else one derived
	// from the event's id (it costs about 4 % of the online path's
	// throughput on the embedded broker: BENCHMARKS.md).
	Traceparent string `mapstructure:"traceparent"`
}

// FairShare configures fair share and quotas per appid (docs/lanes.md).
// Quotas and weights are read again on SIGHUP.
type FairShare struct {
	// Enabled turns fair share and quotas on. An app held back has its
	// events routed later, from the spill topic, so deliveries of
	// different apps leave one source partition out of offset order: IM
	// servers must drop repeats per app (docs/protocol.md §6), as the
	// ingest package of this release does. Default false.
	Enabled bool `mapstructure:"enabled"`
	// Quotas are events per second per lane, by appid ("7": 1000); an
	// app without one has DefaultQuota (0: none).
	Quotas       map[string]int `mapstructure:"quotas"`
	DefaultQuota int            `mapstructure:"default_quota"`
	// Burst is how far an app may run ahead of its quota, as time at that
	// rate. Default 1s.
	Burst time.Duration `mapstructure:"burst"`
	// Weights divide a saturated partition among the apps sending to it
	// ("7": 2); default 1 each.
	Weights map[string]int `mapstructure:"weights"`
	// SaturatedAfter: a partition is saturated while the record being
	// routed waited this long since its producer wrote it; then an app
	// above its weighted share of the partition's recent records is held
	// back. Default 0: only quotas hold apps back (holding by share adds
	// the spill topic's work to a fanout that is already behind; see
	// BENCHMARKS.md).
	SaturatedAfter time.Duration `mapstructure:"saturated_after"`
	// TopApps is how many apps, by volume, have their own series in the
	// per-app metrics; the others are summed as app="other". Default 10.
	TopApps int `mapstructure:"top_apps"`
}

// Quota returns appid's quota (events/s per lane), 0 for none.
func (f FairShare) Quota(appid int64) int {
	if q, ok := f.Quotas[strconv.FormatInt(appid, 10)]; ok {
		return q
	}
	return f.DefaultQuota
}

// Weight returns appid's weight.
func (f FairShare) Weight(appid int64) int {
	if w, ok := f.Weights[strconv.FormatInt(appid, 10)]; ok {
		return w
	}
	return 1
}

func (f FairShare) validate(bad badKey) {
	for key, m := range map[string]map[string]int{"fanout.fair_share.quotas": f.Quotas, "fanout.fair_share.weights": f.Weights} {
		for app, n := range m {
			if _, err := strconv.ParseInt(app, 10, 64); err != nil {
				bad(key, "%q: want an appid", app)
			}
			if n < 1 {
				bad(key, "%s: must be >= 1, got %d", app, n)
			}
		}
	}
	if f.DefaultQuota < 0 {
		bad("fanout.fair_share.default_quota", "must be >= 0, got %d", f.DefaultQuota)
	}
	if f.Burst <= 0 {
		bad("fanout.fair_share.burst", "must be > 0")
	}
	if f.SaturatedAfter < 0 {
		bad("fanout.fair_share.saturated_after", "must be >= 0")
	}
	if f.TopApps < 1 || f.TopApps > 1000 {
		bad("fanout.fair_share.top_apps", "must be between 1 and 1000, got %d", f.TopApps)
	}
}

// Consumes reports whether the lane ("online" or "bulk") is one of
// Lanes.
func (f Fanout) Consumes(lane string) bool {
	for _, l := range f.Lanes {
		if l == lane {
			return true
		}
	}
	return false
}

// Pusher configures the offline-push sink.
type Pusher struct {
	Group         string        `mapstructure:"group"`          // default imstream-pusher: consumer group
	BatchSize     int           `mapstructure:"batch_size"`     // default 1000: entries per flush
	FlushInterval time.Duration `mapstructure:"flush_interval"` // default 500ms: longest wait to fill a batch
	ROMApps       []int64       `mapstructure:"rom_apps"`       // default []: apps whose lists get a _<appid> suffix
	SystemPush    bool          `mapstructure:"system_push"`    // default true: write SYSTEM (21) entries
}

// Gateway configures the IMR-compatible gateway.
type Gateway struct {
	Listen   string `mapstructure:"listen"`    // default 127.0.0.1:4444: where im_service IM servers connect (their route_addrs)
	ServerID string `mapstructure:"server_id"` // default ip: ids by remote IP ("ip": imr-<ip>, then imr-<ip>-2, … for more live connections from it), or per connection ("ip_port")
	IDPrefix string `mapstructure:"id_prefix"` // default "imr-": prefix of the server ids the gateway assigns
	// Rules are the routing rules of the events the gateway writes
	// (docs/gateway.md): "imr" (default), those of im_service's router
	// since 2019 — PUBLISH, PUBLISH_GROUP and PUBLISH_ROOM forwarded as
	// they are, any inner command, never pushed; pushes only from
	// MSG_PUSH — or "imstream", docs/protocol.md §4 (pushes for the
	// offline receivers of PUBLISH and PUBLISH_GROUP, group members from
	// imr.groups), for IM servers older than im_service's 2019 MSG_PUSH.
	Rules string `mapstructure:"rules"`
	// Routers is how many addresses the IM servers' route_addrs list
	// (default 1), and RouterIndex this gateway's place among them (from
	// 0, in route_addrs order, which must be the same on every IM server).
	// An im_service IM server connects to every router and sends a
	// message for uid (room, group) to router uid % N only; with Routers
	// > 1 each gateway names its connections apart (<id_prefix>g<index>-
	// <ip>) and writes a delivery to its IM server only when the
	// receiver, room or group is its own (id % Routers == RouterIndex),
	// so that N gateways serve each IM server once (docs/gateway.md).
	Routers           int           `mapstructure:"routers"`
	RouterIndex       int           `mapstructure:"router_index"`
	HeartbeatInterval time.Duration `mapstructure:"heartbeat_interval"` // default 5s: heartbeats for each connected IM server
	QueueSize         int           `mapstructure:"queue_size"`         // default 10000: frames per connection waiting to be produced
	WriteTimeout      time.Duration `mapstructure:"write_timeout"`      // default 30s: an IM server that does not read for this long is disconnected
	Group             string        `mapstructure:"group"`              // default imstream-gateway: consumer group prefix; each server's deliveries use <group>-<server>
	MaxConnections    int           `mapstructure:"max_connections"`    // default 1000: connections beyond are closed at once (counted); 0 means no limit
	// MaxBroadcastUsers bounds the frames one broadcast becomes on one
	// connection (one per subscribed user of the app): a broadcast to
	// more users is not written, but counted and logged. Default 100000.
	MaxBroadcastUsers int           `mapstructure:"max_broadcast_users"`
	HandshakeTimeout  time.Duration `mapstructure:"handshake_timeout"` // default 0 (off): close a connection that sends no frame for this long after connecting (an IM server without users sends none)
	// AllowCIDRs, when not empty, are the source networks IM servers may
	// connect from (e.g. [10.1.0.0/16]); a connection from elsewhere is
	// closed at once, counted and logged. Default []: any source
	// (docs/gateway.md, "Who may connect").
	AllowCIDRs []string `mapstructure:"allow_cidrs"`
	// TLS, when enabled, makes the gateway speak imr's protocol inside TLS
	// (for IM servers behind a TLS sidecar), with client certificates when
	// tls.client_ca_file is set.
	TLS ServerTLS `mapstructure:"tls"`
	// Quotas, when enabled, hold each app's publish and push events to
	// its quota before Kafka (docs/lanes.md, "Quotas at the gateway").
	Quotas GatewayQuotas `mapstructure:"quotas"`
}

// GatewayQuotas applies fanout.fair_share's quotas (quotas, default_quota,
// burst; read again on SIGHUP) in the gateway, per process: an event over
// its app's quota waits in the gateway's memory, in order behind the app's
// earlier ones, and the rest of the connection goes on.
type GatewayQuotas struct {
	Enabled bool `mapstructure:"enabled"` // default false
	// Scale is the share of each quota one gateway process passes (e.g.
	// 0.5 with two gateways an app's IM servers spread over evenly).
	// Default 1: each gateway passes the whole quota; the fanout still
	// holds the app to it across the deployment.
	Scale float64 `mapstructure:"scale"`
	// MaxHeld bounds the events held in the gateway, all connections
	// together: at that many, a connection that would hold one more is not
	// read until one is released (TCP backpressure on that IM server).
	// Default 100000.
	MaxHeld int `mapstructure:"max_held"`
}

// AllowedPrefixes parses AllowCIDRs (validated).
func (g Gateway) AllowedPrefixes() []netip.Prefix {
	var out []netip.Prefix
	for _, c := range g.AllowCIDRs {
		if p, err := netip.ParsePrefix(c); err == nil {
			out = append(out, p.Masked())
		}
	}
	return out
}

// Admin configures the HTTP port serving /metrics, /healthz and /readyz.
type Admin struct {
	Listen string `mapstructure:"listen"` // default 127.0.0.1:9100; "" disables it
	// /readyz answers 503 when no broker has answered for KafkaDownAfter,
	// Redis for RedisDownAfter, or a partition has retried one batch for
	// StuckAfter. Before Kafka and Redis first answered it is 503 too.
	KafkaDownAfter time.Duration `mapstructure:"kafka_down_after"` // default 15s
	RedisDownAfter time.Duration `mapstructure:"redis_down_after"` // default 5s
	StuckAfter     time.Duration `mapstructure:"stuck_after"`      // default 1m
	// Pprof serves Go's profiles under /debug/pprof/ on the admin port.
	Pprof bool `mapstructure:"pprof"` // default false
}

// Log configures logging.
type Log struct {
	Format string `mapstructure:"format"` // default text: text or json
	Level  string `mapstructure:"level"`  // default info: debug, info, warn, error
}

// Default returns the configuration with every default set.
func Default() Config {
	return Config{
		Kafka: Kafka{
			Brokers:  []string{"localhost:9092"},
			ClientID: "imstream",
			Topics: Topics{
				Presence: "imr.presence", Publish: "imr.publish", Bulk: "imr.publish.bulk", Groups: "imr.groups",
				Push: "imr.push", Spill: "imr.publish.spill", DLQ: "imr.dlq", DeliverPrefix: "imr.deliver.",
			},
			AutoCreateTopics:  true,
			Partitions:        12,
			DeliverPartitions: 4,
			ReplicationFactor: 1,
			Linger:            2 * time.Millisecond,
			BatchSize:         1000,
			WriteTimeout:      10 * time.Second,
			MaxRecordBytes:    256 << 10,
			InternalFormat:    "binary",
			Compression:       "none",
			TopicPartitions:   map[string]int{},
		},
		Redis: Redis{
			Addrs:        []string{"localhost:6379"},
			DialTimeout:  2 * time.Second,
			ReadTimeout:  3 * time.Second,
			WriteTimeout: 3 * time.Second,
			KeyPrefix:    "imstream:", WaitTimeout: time.Second,
		},
		Schemas:  Schemas{MaxBytes: 64 << 10, KeyMismatch: "reject"},
		Shutdown: Shutdown{Grace: 10 * time.Second},
		Consumer: Consumer{
			SessionTimeout:    10 * time.Second,
			HeartbeatInterval: time.Second,
			RebalanceTimeout:  10 * time.Second,
			RetryMin:          50 * time.Millisecond,
			RetryMax:          5 * time.Second,
			QueueSize:         4096,
			MaxFetchBytes:     4 << 20,
			CommitInterval:    100 * time.Millisecond,
		},
		Presence: Presence{
			Group: "imstream-presence", BatchSize: 1000, Lease: 30 * time.Second,
			ServerCache: 500 * time.Millisecond, GCInterval: time.Minute, EpochSkew: 5 * time.Minute,
		},
		Groups: Groups{Group: "imstream-groups", BatchSize: 1000, Cache: time.Second},
		Fanout: Fanout{Group: "imstream-fanout", BatchSize: 500, BatchPushJobs: true, GroupChunk: 2000, Lanes: []string{"online", "bulk"}, Traceparent: "producer",
			FairShare: FairShare{Quotas: map[string]int{}, Weights: map[string]int{}, Burst: time.Second, TopApps: 10}},
		Pusher: Pusher{
			Group:         "imstream-pusher",
			BatchSize:     1000,
			FlushInterval: 500 * time.Millisecond,
			ROMApps:       []int64{},
			SystemPush:    true,
		},
		Gateway: Gateway{
			Listen: "127.0.0.1:4444", ServerID: "ip", IDPrefix: "imr-", Rules: "imr", Routers: 1, HeartbeatInterval: 5 * time.Second,
			QueueSize: 10000, WriteTimeout: 30 * time.Second, Group: "imstream-gateway", MaxConnections: 1000, MaxBroadcastUsers: 100000,
			AllowCIDRs: []string{}, Quotas: GatewayQuotas{Scale: 1, MaxHeld: 100000},
		},
		Admin: Admin{Listen: "127.0.0.1:9100", KafkaDownAfter: 15 * time.Second, RedisDownAfter: 5 * time.Second, StuckAfter: time.Minute},
		Log:   Log{Format: "text", Level: "info"},
	}
}

// Keys lists every configuration key ("kafka.brokers", ...).
func Keys() []string {
	var keys []string
	for _, kv := range Defaults() {
		keys = append(keys, kv.Key)
	}
	return keys
}

// KeyValue is a configuration key and its default value (string, int,
// bool, time.Duration, []string, []int64, …).
type KeyValue struct {
	Key   string
	Value any
}

// Defaults lists every configuration key with its default, sorted by key.
func Defaults() []KeyValue {
	var out []KeyValue
	var walk func(prefix string, m map[string]any)
	walk = func(prefix string, m map[string]any) {
		for k, val := range m {
			if sub, ok := val.(map[string]any); ok {
				walk(prefix+k+".", sub)
				continue
			}
			out = append(out, KeyValue{prefix + k, val})
		}
	}
	var m map[string]any
	_ = mapstructure.Decode(Default(), &m)
	walk("", m)
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

// Validate checks every section and returns every bad key, joined; each
// error names its key ("config: kafka.partitions: must be >= 1, got 0").
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, a ...any) {
		errs = append(errs, fmt.Errorf("config: %s: %s", key, fmt.Sprintf(format, a...)))
	}
	for _, section := range []func(badKey){c.Kafka.validate, c.Redis.validate, c.Admin.validate, c.Shutdown.validate,
		c.Schemas.validate, c.Consumer.validate, c.Presence.validate, c.Groups.validate, c.Fanout.validate,
		c.Pusher.validate, c.Gateway.validate, c.Log.validate} {
		section(bad)
	}
	// A deliver record is its event plus src: it must fit what imstream writes.
	if c.Schemas.MaxBytes > c.Kafka.MaxRecordBytes-4096 {
		bad("schemas.max_bytes", "must be at most kafka.max_record_bytes - 4096 (%d): a delivery is its event plus src, and must fit a record; got %d",
			c.Kafka.MaxRecordBytes-4096, c.Schemas.MaxBytes)
	}
	return errors.Join(errs...)
}

// badKey reports a bad value of key.
type badKey = func(key, format string, a ...any)

func (k Kafka) validate(bad badKey) {
	if len(k.Brokers) == 0 {
		bad("kafka.brokers", "at least one broker is required")
	}
	for key, t := range map[string]string{
		"kafka.topics.presence": k.Topics.Presence, "kafka.topics.publish": k.Topics.Publish,
		"kafka.topics.bulk":   k.Topics.Bulk,
		"kafka.topics.groups": k.Topics.Groups, "kafka.topics.push": k.Topics.Push, "kafka.topics.spill": k.Topics.Spill,
		"kafka.topics.dlq": k.Topics.DLQ, "kafka.topics.deliver_prefix": k.Topics.DeliverPrefix,
	} {
		if t == "" {
			bad(key, "must not be empty")
		}
	}
	for t, n := range k.TopicPartitions {
		if n < 1 {
			bad("kafka.topic_partitions", "%s: must be >= 1, got %d", t, n)
		}
	}
	if k.Partitions < 1 {
		bad("kafka.partitions", "must be >= 1, got %d", k.Partitions)
	}
	if k.DeliverPartitions < 1 {
		bad("kafka.deliver_partitions", "must be >= 1, got %d", k.DeliverPartitions)
	}
	if k.ReplicationFactor < 1 {
		bad("kafka.replication_factor", "must be >= 1, got %d", k.ReplicationFactor)
	}
	if k.Linger < 0 || k.Linger > time.Second {
		bad("kafka.linger", "must be between 0 and 1s, got %s", k.Linger)
	}
	if k.BatchSize < 1 {
		bad("kafka.batch_size", "must be >= 1, got %d", k.BatchSize)
	}
	if k.MaxRecordBytes < 16<<10 || k.MaxRecordBytes > 1000000 {
		bad("kafka.max_record_bytes", "must be between 16384 and 1000000 (the brokers' default message.max.bytes is 1048588), got %d", k.MaxRecordBytes)
	}
	if k.WriteTimeout <= 0 {
		bad("kafka.write_timeout", "must be > 0")
	}
	switch k.Compression {
	case "none", "lz4", "zstd", "snappy", "gzip":
	default:
		bad("kafka.compression", "must be none, lz4, zstd, snappy or gzip, got %q", k.Compression)
	}
	if k.InternalFormat != "binary" && k.InternalFormat != "json" {
		bad("kafka.internal_format", "must be binary or json, got %q", k.InternalFormat)
	}
	k.SASL.validate(bad)
	if _, err := k.TLS.Config(); err != nil {
		bad("kafka.tls", "%v", err)
	}
}

func (a Admin) validate(bad badKey) {
	for key, d := range map[string]time.Duration{"admin.kafka_down_after": a.KafkaDownAfter,
		"admin.redis_down_after": a.RedisDownAfter, "admin.stuck_after": a.StuckAfter} {
		if d < 0 {
			bad(key, "must not be negative, got %s", d)
		}
	}
}

// consuming checks the keys every consuming stage's section has: its
// consumer group and batch size (at most maxBatch, when > 0).
func consuming(bad badKey, section, group string, batch, maxBatch int) {
	if group == "" {
		bad(section+".group", "must not be empty")
	}
	switch {
	case maxBatch > 0 && (batch < 1 || batch > maxBatch):
		bad(section+".batch_size", "must be 1..%d, got %d", maxBatch, batch)
	case batch < 1:
		bad(section+".batch_size", "must be >= 1, got %d", batch)
	}
}

func (g Groups) validate(bad badKey) {
	consuming(bad, "groups", g.Group, g.BatchSize, 0)
	if g.Cache < 0 {
		bad("groups.cache", "must be >= 0")
	}
}

func (r Redis) validate(bad badKey) {
	if _, err := r.TLS.Config(); err != nil {
		bad("redis.tls", "%v", err)
	}
	if len(r.Addrs) == 0 {
		bad("redis.addrs", "at least one address is required")
	}
	if r.Cluster && r.DB != 0 {
		bad("redis.db", "must be 0 with redis.cluster")
	}
	if r.WaitReplicas < 0 || r.WaitTimeout <= 0 {
		bad("redis.wait_replicas", "must be >= 0 with redis.wait_timeout > 0")
	}
}

func (s Shutdown) validate(bad badKey) {
	if s.Grace < time.Second {
		bad("shutdown.grace", "must be >= 1s, got %s", s.Grace)
	}
}

func (s Schemas) validate(bad badKey) {
	if s.MaxBytes < 1024 {
		bad("schemas.max_bytes", "must be >= 1024, got %d", s.MaxBytes)
	}
	if s.KeyMismatch != "reject" && s.KeyMismatch != "accept" {
		bad("schemas.key_mismatch", "must be reject or accept, got %q", s.KeyMismatch)
	}
}

func (c Consumer) validate(bad badKey) {
	if c.RetryMin <= 0 || c.RetryMax < c.RetryMin {
		bad("consumer.retry_min", "must be > 0 and <= consumer.retry_max")
	}
	if c.CommitInterval < 0 {
		bad("consumer.commit_interval", "must be >= 0, got %s", c.CommitInterval)
	}
	if c.QueueSize < 1 {
		bad("consumer.queue_size", "must be >= 1, got %d", c.QueueSize)
	}
	if c.SessionTimeout < time.Second || c.HeartbeatInterval <= 0 ||
		c.HeartbeatInterval >= c.SessionTimeout {
		bad("consumer.heartbeat_interval", "must be > 0 and below consumer.session_timeout (>= 1s)")
	}
}

func (p Presence) validate(bad badKey) {
	consuming(bad, "presence", p.Group, p.BatchSize, 0)
	if p.EpochSkew < time.Second {
		bad("presence.epoch_skew", "must be >= 1s, got %s", p.EpochSkew)
	}
	if p.Lease < time.Second {
		bad("presence.lease", "must be >= 1s, got %s", p.Lease)
	}
	if p.ServerCache < 0 || p.ServerCache >= p.Lease {
		bad("presence.server_cache", "must be >= 0 and below presence.lease")
	}
	if p.GCInterval < 0 {
		bad("presence.gc_interval", "must be >= 0")
	}
}

func (f Fanout) validate(bad badKey) {
	consuming(bad, "fanout", f.Group, f.BatchSize, 0)
	if f.GroupChunk < 1 || f.GroupChunk > 100000 {
		bad("fanout.group_chunk", "must be between 1 and 100000, got %d", f.GroupChunk)
	}
	if len(f.Lanes) == 0 {
		bad("fanout.lanes", "must name online, bulk or both")
	}
	for _, l := range f.Lanes {
		if l != "online" && l != "bulk" {
			bad("fanout.lanes", "unknown lane %q (online, bulk)", l)
		}
	}
	f.FairShare.validate(bad)
	if f.Traceparent != "producer" && f.Traceparent != "derived" {
		bad("fanout.traceparent", "must be producer or derived, got %q", f.Traceparent)
	}
}

func (p Pusher) validate(bad badKey) {
	consuming(bad, "pusher", p.Group, p.BatchSize, 100000)
	if p.FlushInterval <= 0 {
		bad("pusher.flush_interval", "must be > 0")
	}
	for _, a := range p.ROMApps {
		if a <= 0 {
			bad("pusher.rom_apps", "app ids must be > 0, got %d", a)
		}
	}
}

func (g Gateway) validate(bad badKey) {
	if g.Routers < 1 || g.RouterIndex < 0 || g.RouterIndex >= g.Routers {
		bad("gateway.router_index", "must be 0..gateway.routers-1 (routers %d), got %d", g.Routers, g.RouterIndex)
	}
	if g.Rules != "imr" && g.Rules != "imstream" {
		bad("gateway.rules", "must be imr or imstream, got %q", g.Rules)
	}
	if g.ServerID != "ip" && g.ServerID != "ip_port" {
		bad("gateway.server_id", "must be ip or ip_port, got %q", g.ServerID)
	}
	if g.MaxBroadcastUsers < 1 {
		bad("gateway.max_broadcast_users", "must be >= 1, got %d", g.MaxBroadcastUsers)
	}
	if g.MaxConnections < 0 {
		bad("gateway.max_connections", "must be >= 0 (0: no limit), got %d", g.MaxConnections)
	}
	if g.HandshakeTimeout < 0 {
		bad("gateway.handshake_timeout", "must be >= 0 (0: off), got %s", g.HandshakeTimeout)
	}
	if _, err := g.TLS.Config(); err != nil {
		bad("gateway.tls", "%v", err)
	}
	for _, c := range g.AllowCIDRs {
		if _, err := netip.ParsePrefix(c); err != nil {
			bad("gateway.allow_cidrs", "%q is not a network in CIDR notation (e.g. 10.1.0.0/16, 10.1.2.3/32, fd00::/8)", c)
		}
	}
	if g.HeartbeatInterval <= 0 {
		bad("gateway.heartbeat_interval", "must be > 0 (and well below the presence role's presence.lease)")
	}
	if g.Quotas.Scale <= 0 {
		bad("gateway.quotas.scale", "must be > 0, got %g", g.Quotas.Scale)
	}
	if g.Quotas.MaxHeld < 1 {
		bad("gateway.quotas.max_held", "must be >= 1, got %d", g.Quotas.MaxHeld)
	}
	if g.QueueSize < 1 {
		bad("gateway.queue_size", "must be >= 1, got %d", g.QueueSize)
	}
	if g.WriteTimeout <= 0 {
		bad("gateway.write_timeout", "must be > 0")
	}
	if g.Group == "" {
		bad("gateway.group", "must not be empty")
	}
}

func (l Log) validate(bad badKey) {
	if l.Format != "text" && l.Format != "json" {
		bad("log.format", "must be text or json, got %q", l.Format)
	}
	switch l.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "must be debug, info, warn or error, got %q", l.Level)
	}
}
