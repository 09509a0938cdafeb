package e2e_test

// The commands that bring their own embedded Kafka and Redis: `imstream dev`
// (what `make run` runs) and `imstream loadgen --embedded`.

import (
	"bufio"
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
