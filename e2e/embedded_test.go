package e2e_test

// The commands that bring their own embedded Kafka and Redis: `imstream dev`
// (what `make run` runs) and `imstream loadgen --embedded`.

import (
	"bufio"
	"net"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/imstream/imstream/internal/tools/testkit"
)

// TestDev runs `imstream dev` (what `make run` runs) and waits for push
// entries and deliveries to show in its status lines within 30 s.
func TestDev(t *testing.T) {
	bin := testkit.Binary(t, "..")
	cmd := exec.Command(bin, "dev", "--kafka-port", "0", "--admin.listen", "127.0.0.1:0", "--gateway.listen", "127.0.0.1:0", "--rate", "200")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	lists := regexp.MustCompile(`push lists: .*push_queue=(\d+)`)
	delivered := regexp.MustCompile(`delivered: sim-1=(\d+)`)
	gotPush, gotDeliver := false, false
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			line := sc.Text()
			if m := lists.FindStringSubmatch(line); m != nil {
				if n, _ := strconv.Atoi(m[1]); n > 0 {
					gotPush = true
				}
			}
			if m := delivered.FindStringSubmatch(line); m != nil {
				if n, _ := strconv.Atoi(m[1]); n > 0 {
					gotDeliver = true
				}
			}
			if gotPush && gotDeliver {
				return
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
	}
	if !gotPush || !gotDeliver {
		t.Fatalf("within 30s: push entries seen=%v, deliveries seen=%v", gotPush, gotDeliver)
	}
}

// TestLoadgen runs `imstream loadgen --embedded` over both protocols at a
// size that fits CI; the command fails when anything is lost or doubled.
// (The 1M-message run is recorded in docs/gateway.md.)
func TestLoadgen(t *testing.T) {
	bin := testkit.Binary(t, "..")
	for _, proto := range []string{"imr", "kafka"} {
		t.Run(proto, func(t *testing.T) {
			out, err := exec.Command(bin, "loadgen", "--embedded", "--protocol", proto, "--servers", "4",
				"--pushes", "20000", "--rt", "2000").CombinedOutput()
			if err != nil {
				t.Fatalf("loadgen: %v\n%s", err, out)
			}
			if !strings.Contains(string(out), "0 lost, 0 doubled") {
				t.Fatalf("unexpected report:\n%s", out)
			}
		})
	}
}

// TestLoadgenRemoteGateway runs `imstream loadgen` against a gateway at an
// address that is not loopback — on a veth interface the test creates, so
// no traffic leaves the machine — as docs/migration.md's staging check does.
// On one machine a loopback source reaches such an address too, so this
// shows the whole run works against a non-loopback gateway; that loadgen no
// longer binds 127.0.0.10+i for a gateway on another host (it failed there
// with "invalid argument") is loadgen's TestSourceIP.
func TestLoadgenRemoteGateway(t *testing.T) {
	if testing.Short() {
		t.Skip("integration")
	}
	ip := localAddress(t)
	s := startStack(t, 1, 1)
	gw, _ := s.startGateway(ip+":0", "--gateway.heartbeat_interval", "500ms")
	out, err := exec.Command(s.bin, "loadgen", "--gateway", gw, "--servers", "2", "--users", "5",
		"--pushes", "500", "--rt", "200", "--churn=false",
		"--kafka.brokers", strings.Join(s.cfg.Kafka.Brokers, ","), "--redis.addrs", s.cfg.Redis.Addrs[0],
		"--kafka.partitions", "4").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "0 lost, 0 doubled") {
		t.Fatalf("loadgen against %s: %v\n%s", gw, err, out)
	}
}

// localAddress is an IPv4 address of this machine that is not loopback:
// one the test puts on a veth pair it creates (root), else one an
// interface already has; without either the test cannot run here.
func localAddress(t *testing.T) string {
	const a, b, ip = "imstlg0", "imstlg1", "10.203.77.1"
	if exec.Command("ip", "link", "add", a, "type", "veth", "peer", "name", b).Run() == nil {
		t.Cleanup(func() { _ = exec.Command("ip", "link", "del", a).Run() })
		for _, args := range [][]string{{"addr", "add", ip + "/32", "dev", a}, {"link", "set", a, "up"}, {"link", "set", b, "up"}} {
			if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
				t.Fatalf("ip %v: %v %s", args, err, out)
			}
		}
		return ip
	}
	addrs, _ := net.InterfaceAddrs()
	for _, ad := range addrs {
		if n, ok := ad.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() {
			return n.IP.String()
		}
	}
	t.Skip("no address but loopback, and no veth pair can be created (needs root)")
	return ""
}
