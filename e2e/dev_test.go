package e2e_test

import (
	"bufio"
	"os/exec"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/imstream/imstream/internal/tools/testenv"
)

// TestDev runs `imstream dev` (what `make run` runs) and waits for push
// entries and deliveries to show in its status lines within 30 s.
func TestDev(t *testing.T) {
	bin := testenv.Binary(t, "..")
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
