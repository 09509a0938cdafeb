package e2e_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestLevels holds the tree to the levels of docs/architecture.md: the
// contract imports no other level, plumbing knows no stage, no stage
// imports another, the IM servers' library knows no stage, and only
// wiring and tools import wiring and tools.
func TestLevels(t *testing.T) {
	const mod = "github.com/imstream/imstream/"
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`, "../...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	stages := map[string]bool{"presence": true, "groups": true, "fanout": true, "pusher": true, "gateway": true}
	level := func(p string) string {
		switch {
		case p == "schemas" || p == "store" || strings.HasPrefix(p, "store/"):
			return "contract"
		case stages[p]:
			return "stage"
		case p == "ingest" || strings.HasPrefix(p, "ingest/"):
			return "library"
		case p == "internal/role" || strings.HasPrefix(p, "cmd/"):
			return "wiring"
		case strings.HasPrefix(p, "internal/tools/") || p == "internal/status" || p == "e2e" || p == "deploy":
			return "tools"
		case strings.HasPrefix(p, "internal/"):
			return "plumbing"
		}
		return "unknown"
	}
	// allowed[a][b]: a package of level a may import one of level b.
	allowed := map[string]map[string]bool{
		"contract": {"contract": true, "plumbing": true}, // store's Redis implementations use internal/redisx
		"plumbing": {"contract": true, "plumbing": true},
		"stage":    {"contract": true, "plumbing": true, "library": true, "stage": true},
		"library":  {"contract": true, "plumbing": true, "library": true},
		"wiring":   {"contract": true, "plumbing": true, "library": true, "stage": true, "wiring": true, "tools": true},
		"tools":    {"contract": true, "plumbing": true, "library": true, "stage": true, "wiring": true, "tools": true},
	}
	checked := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		p, ok := strings.CutPrefix(f[0], mod)
		if !ok {
			continue
		}
		lp := level(p)
		if lp == "unknown" {
			t.Errorf("%s has no level: add it to docs/architecture.md and this test", p)
			continue
		}
		for _, imp := range f[1:] {
			q, ok := strings.CutPrefix(imp, mod)
			if !ok {
				continue
			}
			checked++
			lq := level(q)
			switch {
			case p == "schemas":
				t.Errorf("schemas imports %s: the contract's events depend on nothing of imstream", q)
			case !allowed[lp][lq]:
				t.Errorf("%s (%s) imports %s (%s)", p, lp, q, lq)
			case lp == "stage" && lq == "stage":
				t.Errorf("stage %s imports stage %s: stages share state only through store's interfaces", p, q)
			}
		}
	}
	if checked < 20 {
		t.Fatalf("only %d imports checked: go list output not understood\n%s", checked, out)
	}
}
