package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/imstream/imstream/internal/plumbing/config"
)

// TestTypedFlags: configuration flags are typed, show their defaults, and
// apply — lists as comma-separated values, durations as durations.
func TestTypedFlags(t *testing.T) {
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	path := configFlags(fs)
	if f := fs.Lookup("kafka.linger"); f == nil || f.Value.Type() != "duration" || f.DefValue != "2ms" {
		t.Fatalf("kafka.linger flag: %+v", f)
	}
	if f := fs.Lookup("pusher.rom_apps"); f == nil || f.Value.Type() != "int64Slice" {
		t.Fatalf("pusher.rom_apps flag: %+v", f)
	}
	err := fs.Parse([]string{"--kafka.brokers", "a:1,b:2", "--pusher.rom_apps", "5,6", "--kafka.linger", "7ms", "--pusher.system_push=false",
		"--kafka.topic_partitions", "imr.publish=24,imr.push=6"})
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("IMSTREAM_KAFKA_PARTITIONS", "24")
	cfg, err := loadConfig(*path, fs)
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(cfg.Kafka.Brokers, cfg.Pusher.ROMApps, cfg.Kafka.Linger, cfg.Pusher.SystemPush, cfg.Kafka.Partitions); got != "[a:1 b:2] [5 6] 7ms false 24" {
		t.Errorf("loaded %s", got)
	}
	if got := fmt.Sprint(cfg.Kafka.PartitionsOf("imr.publish"), cfg.Kafka.PartitionsOf("imr.push"), cfg.Kafka.PartitionsOf("imr.presence")); got != "24 6 24" {
		t.Errorf("kafka.topic_partitions: partitions of imr.publish, imr.push, imr.presence: %s", got)
	}
	if err := fs.Parse([]string{"--kafka.linger", "soon"}); err == nil {
		t.Error("a bad duration was accepted")
	}
}

// TestExitCodes: help and version exit 0; bad flags, unknown commands and
// bad configuration exit 2 with a message; --help names the command.
func TestExitCodes(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "imstream")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--help"}, 0, "Available Commands"},
		{[]string{"-h"}, 0, "Available Commands"},
		{[]string{"fanout", "--help"}, 0, "--kafka.brokers strings"},
		{[]string{"--version"}, 0, "imstream "},
		{[]string{"version"}, 0, "imstream "},
		{[]string{"--bogus"}, 2, "imstream: unknown flag: --bogus"}, // the command's path once
		{[]string{"completion", "bash"}, 0, "bash completion"},
		{[]string{"fanout", "--no-such-flag"}, 2, "imstream fanout: unknown flag: --no-such-flag"},
		{[]string{"no-such-command"}, 2, "unknown command"},
		{[]string{"fanout", "--kafka.partitions", "0"}, 2, "kafka.partitions: must be >= 1"},
		{[]string{"reset-server"}, 2, "--server is required"},
	} {
		cmd := exec.Command(bin, c.args...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		cmd.Env = append(os.Environ(), "IMSTREAM_KAFKA_BROKERS=127.0.0.1:1")
		done := make(chan error, 1)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			t.Fatalf("%v did not exit", c.args)
		}
		if code := cmd.ProcessState.ExitCode(); code != c.code || !strings.Contains(out.String(), c.want) {
			t.Errorf("imstream %s: exit %d, want %d; output should contain %q:\n%s", strings.Join(c.args, " "), code, c.code, c.want, out.String())
		}
	}
}

// TestVersion: --version and the version command print the same line.
func TestVersion(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "imstream")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	a, err1 := exec.Command(bin, "--version").Output()
	b, err2 := exec.Command(bin, "version").Output()
	if err1 != nil || err2 != nil || string(a) != string(b) || !strings.HasPrefix(string(a), "imstream ") || strings.Count(string(a), "\n") != 1 {
		t.Errorf("--version %q (%v), version %q (%v): want one identical line", a, err1, b, err2)
	}
}

// TestStatusNobodyAnswers: `imstream status` with nothing listening at
// --admin fails (a script checking a deployment sees it), naming where it
// asked.
func TestStatusNobodyAnswers(t *testing.T) {
	cfg := config.Default()
	cfg.Kafka.Brokers = []string{"127.0.0.1:1"}
	err := runStatus(context.Background(), cfg, []string{"127.0.0.1:1"}, 10*time.Millisecond, false)
	if err == nil || !strings.Contains(err.Error(), "no imstream process answered at 127.0.0.1:1") {
		t.Fatalf("err = %v", err)
	}
}

// TestFlagDescriptions: every configuration key's flag says what it does,
// in the words of deploy/imstream.example.yaml.
func TestFlagDescriptions(t *testing.T) {
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	configFlags(fs)
	n := 0
	for _, kv := range config.Defaults() {
		f := fs.Lookup(kv.Key)
		if f == nil || strings.HasPrefix(f.Usage, "configuration key ") || len(f.Usage) < 8 {
			t.Errorf("--%s has no description (give its line in deploy/imstream.example.yaml a comment)", kv.Key)
		}
		n++
	}
	if f := fs.Lookup("kafka.linger"); f == nil || !strings.Contains(f.Usage, "fill a batch") {
		t.Errorf("--kafka.linger: %q", f.Usage)
	}
	if n < 80 {
		t.Fatalf("%d keys", n)
	}
}
