package e2e_test

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/imstream/imstream/internal/tools/testenv"
)

// TestLoadgen runs `imstream loadgen --embedded` over both protocols at a
// size that fits CI; the command fails when anything is lost or doubled.
// (The 1M-message run is recorded in docs/gateway.md.)
func TestLoadgen(t *testing.T) {
	bin := testenv.Binary(t, "..")
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
