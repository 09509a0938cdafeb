package config_test

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/imstream/imstream/internal/plumbing/config"
	"github.com/imstream/imstream/internal/plumbing/config/load"
)

// TestExampleFile: deploy/imstream.example.yaml loads, validates, sets every
// key, and equals the defaults (it documents them).
func TestExampleFile(t *testing.T) {
	path := filepath.Join("..", "..", "..", "deploy", "imstream.example.yaml")
	cfg, err := load.Config(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfg, config.Default()) {
		t.Errorf("example file differs from Default():\n%+v\n%+v", cfg, config.Default())
	}
	raw, _ := os.ReadFile(path)
	for _, k := range config.Keys() {
		leaf := k[strings.LastIndex(k, ".")+1:]
		if !strings.Contains(string(raw), leaf+":") {
			t.Errorf("example file does not document %s", k)
		}
	}
}

func TestOverrides(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.yaml")
	os.WriteFile(path, []byte("kafka:\n  brokers: [a:1, b:2]\npusher:\n  batch_size: 10\n  flush_interval: 20ms\n"), 0o644)
	t.Setenv("IMSTREAM_PUSHER_ROM_APPS", "7,9")
	t.Setenv("IMSTREAM_PUSHER_BATCH_SIZE", "20")
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	for _, k := range config.Keys() {
		fs.String(k, "", "")
	}
	fs.String("other", "", "")
	if err := fs.Parse([]string{"--redis.addrs=r:1,r:2", "--pusher.batch_size=30", "--other=x"}); err != nil {
		t.Fatal(err)
	}
	cfg, err := load.Config(path, fs)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfg.Kafka.Brokers, []string{"a:1", "b:2"}) || cfg.Pusher.FlushInterval != 20*time.Millisecond {
		t.Errorf("file not applied: %+v", cfg)
	}
	if !reflect.DeepEqual(cfg.Pusher.ROMApps, []int64{7, 9}) {
		t.Errorf("env not applied: %v", cfg.Pusher.ROMApps)
	}
	if cfg.Pusher.BatchSize != 30 || !reflect.DeepEqual(cfg.Redis.Addrs, []string{"r:1", "r:2"}) {
		t.Errorf("flags not applied (flags > env > file): %d %v", cfg.Pusher.BatchSize, cfg.Redis.Addrs)
	}
	if cfg.Kafka.Partitions != 12 {
		t.Errorf("default lost: %d", cfg.Kafka.Partitions)
	}
}

func TestValidateNamesKey(t *testing.T) {
	tests := map[string]string{
		"pusher:\n  batch_size: 0\n":        "config: pusher.batch_size: must be 1..100000, got 0",
		"log:\n  format: xml\n":             `config: log.format: must be text or json, got "xml"`,
		"kafka:\n  brokers: []\n":           "config: kafka.brokers: at least one broker is required",
		"pusher:\n  rom_apps: [0]\n":        "config: pusher.rom_apps: app ids must be > 0, got 0",
		"pusher:\n  batchsize: 5\n":         "batchsize",
		"pusher:\n  flush_interval: soon\n": "flush_interval",
	}
	for yaml, want := range tests {
		path := filepath.Join(t.TempDir(), "c.yaml")
		os.WriteFile(path, []byte(yaml), 0o644)
		_, err := load.Config(path, nil)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: err = %v, want %q", yaml, err, want)
		}
	}
}
