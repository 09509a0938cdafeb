package e2e_test

import (
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// level is one row of docs/architecture.md's level table.
type level struct {
	name    string
	folders []string // with a trailing slash
	imports []string // the levels it may import
}

// levelTable reads the level table of docs/architecture.md.
func levelTable(t *testing.T) []level {
	t.Helper()
	doc, err := os.ReadFile("../docs/architecture.md")
	if err != nil {
		t.Fatal(err)
	}
	code := regexp.MustCompile("`([^`]*)`")
	var rows []level
	in := false
	for _, line := range strings.Split(string(doc), "\n") {
		switch {
		case strings.HasPrefix(line, "| level | folders | may import |"):
			in = true
			continue
		case !in || strings.HasPrefix(line, "|---"):
			continue
		case !strings.HasPrefix(line, "|"):
			in = false
			continue
		}
		cols := strings.Split(line, "|")
		l := level{name: strings.TrimSpace(cols[1])}
		for _, m := range code.FindAllStringSubmatch(cols[2], -1) {
			l.folders = append(l.folders, m[1])
		}
		for _, m := range code.FindAllStringSubmatch(cols[3], -1) {
			l.imports = append(l.imports, m[1])
		}
		rows = append(rows, l)
	}
	if len(rows) < 5 {
		t.Fatalf("docs/architecture.md: level table not found (%d rows)", len(rows))
	}
	for _, l := range rows {
		for _, f := range l.folders {
			if _, err := os.Stat("../" + f); err != nil {
				t.Errorf("docs/architecture.md: level %s names folder %s, which does not exist", l.name, f)
			}
		}
	}
	return rows
}

// TestLevels holds the tree to the level table of docs/architecture.md:
// every package is in a folder of exactly one level, imports only the
// levels its row allows, and no stage imports another stage. The table
// is the rule; this test adds only the one a table cannot say (stages
// apart).
func TestLevels(t *testing.T) {
	const mod = "github.com/imstream/imstream/"
	rows := levelTable(t)
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`, "../...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	levelOf := func(p string) (*level, string) {
		var hit *level
		top := ""
		for i := range rows {
			for _, f := range rows[i].folders {
				if strings.HasPrefix(p+"/", f) {
					if hit != nil && hit != &rows[i] {
						t.Errorf("%s is in folders of two levels, %s and %s", p, hit.name, rows[i].name)
					}
					hit, top = &rows[i], f
				}
			}
		}
		return hit, top
	}
	checked := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		p, ok := strings.CutPrefix(f[0], mod)
		if !ok {
			continue
		}
		lp, topP := levelOf(p)
		if lp == nil {
			t.Errorf("%s is in no folder of the level table: give its folder a row in docs/architecture.md", p)
			continue
		}
		for _, imp := range f[1:] {
			q, ok := strings.CutPrefix(imp, mod)
			if !ok {
				continue
			}
			checked++
			lq, topQ := levelOf(q)
			switch {
			case lq == nil:
			case lp.name == "stages" && lq.name == "stages":
				if topP != topQ {
					t.Errorf("stage %s imports stage %s: stages share state only through the stores' interfaces", p, q)
				}
			case !slices.Contains(lp.imports, lq.name):
				t.Errorf("%s (%s) imports %s (%s): the table allows %s only %v", p, lp.name, q, lq.name, lp.name, lp.imports)
			}
		}
	}
	if checked < 20 {
		t.Fatalf("only %d imports checked: go list output not understood\n%s", checked, out)
	}
}

// TestArchitectureExcerpt: the "whole" groups.go that docs/architecture.md
// shows is groups/groups.go from its type on, less comment lines.
func TestArchitectureExcerpt(t *testing.T) {
	doc, err := os.ReadFile("../docs/architecture.md")
	if err != nil {
		t.Fatal(err)
	}
	const head = "// groups/groups.go — the smallest stage, whole (less its doc comments).\n"
	s := string(doc)
	i := strings.Index(s, head)
	if i < 0 {
		t.Fatal("docs/architecture.md: the groups.go excerpt is gone")
	}
	excerpt := s[i+len(head):]
	excerpt = excerpt[:strings.Index(excerpt, "\n```")]
	src, err := os.ReadFile("../groups/groups.go")
	if err != nil {
		t.Fatal(err)
	}
	code := string(src)[strings.Index(string(src), "type Groups struct"):]
	var lines []string
	for _, l := range strings.Split(code, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "//") {
			lines = append(lines, l)
		}
	}
	if want := strings.TrimSpace(strings.Join(lines, "\n")); strings.TrimSpace(excerpt) != want {
		t.Fatalf("docs/architecture.md's groups.go excerpt differs from groups/groups.go:\n%s\n--- want ---\n%s", excerpt, want)
	}
}
