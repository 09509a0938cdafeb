package deploy_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/imstream/imstream/internal/plumbing/config"
)

// TestDocsReferences: what the docs name exists — every metric an
// imstream process exports, every configuration key, every file or
// directory of the repository, and every exported Go identifier of
// imstream's packages written as pkg.Name.
func TestDocsReferences(t *testing.T) {
	docs, _ := filepath.Glob("../docs/*.md")
	docs = append(docs, "../README.md", "../BENCHMARKS.md", "k8s/README.md")
	metrics := exported(t)
	keys := map[string]bool{}
	for _, k := range config.Keys() {
		keys[k] = true
		for p := k; strings.Contains(p, "."); p = p[:strings.LastIndex(p, ".")] {
			keys[p[:strings.LastIndex(p, ".")]] = true // sections: kafka, kafka.topics, ...
		}
	}
	idents := goIdents(t, "..", "ingest", "schemas", "store", "fanout", "pusher", "presence", "gateway", "groups")

	metricRe := regexp.MustCompile(`\bimstream_[a-z0-9_]*[a-z0-9]\b`)
	codeRe := regexp.MustCompile("`([^`\n]+)`")
	keyRe := regexp.MustCompile(`^(kafka|redis|schemas|presence|groups|fanout|pusher|gateway|consumer|admin|log|shutdown)\.[a-z_.]+$`)
	pathRe := regexp.MustCompile(`^(docs|deploy|e2e|cmd|internal|schemas|ingest|store|fanout|pusher|presence|gateway|groups|scripts|examples)/[A-Za-z0-9_./-]*$`)
	identRe := regexp.MustCompile(`^(ingest|schemas|store|fanout|pusher|presence|gateway|groups)\.([A-Z][A-Za-z0-9]*)`)
	seen := map[string]int{} // references checked, by kind: the test must not pass by matching nothing
	for _, d := range docs {
		b, err := os.ReadFile(d)
		if err != nil {
			t.Fatal(err)
		}
		text := string(b)
		for _, m := range metricRe.FindAllString(text, -1) {
			seen["metric"]++
			if !metrics[m] && !strings.HasSuffix(m, "_") {
				t.Errorf("%s names metric %s, which no process exports", d, m)
			}
		}
		for _, c := range codeRe.FindAllStringSubmatch(text, -1) {
			code := strings.TrimSuffix(strings.Fields(c[1] + " x")[0], ":")
			if strings.HasSuffix(code, ".md") && !strings.Contains(code, "/") { // a page of docs/ or the root
				_, err1 := os.Stat(filepath.Join("../docs", code))
				_, err2 := os.Stat(filepath.Join("..", code))
				if err1 != nil && err2 != nil {
					t.Errorf("%s names %s, which is neither in docs/ nor at the root", d, code)
				}
				continue
			}
			switch {
			case keyRe.MatchString(code) && !strings.HasSuffix(code, ".go") && !strings.Contains(code, "/"):
				seen["key"]++
				if !keys[code] && !strings.HasPrefix(code, "kafka.topics.") && !identRe.MatchString(code) {
					t.Errorf("%s names configuration key %s, which does not exist", d, code)
				}
			case pathRe.MatchString(code):
				p := strings.TrimRight(strings.SplitN(code, "#", 2)[0], ".,")
				if strings.ContainsAny(p, "<>*{") {
					continue
				}
				seen["path"]++
				if _, err := os.Stat(filepath.Join("..", p)); err != nil {
					t.Errorf("%s names %s, which is not in the repository", d, p)
				}
			}
			if m := identRe.FindStringSubmatch(code); m != nil {
				seen["identifier"]++
			}
			if m := identRe.FindStringSubmatch(code); m != nil && !idents[m[1]+"."+m[2]] && !strings.HasSuffix(code, "*") {
				t.Errorf("%s names %s.%s, which package %s does not export", d, m[1], m[2], m[1])
			}
		}
	}
	for kind, least := range map[string]int{"metric": 50, "key": 30, "path": 20, "identifier": 3} {
		if seen[kind] < least {
			t.Errorf("only %d %s references found in the docs: the patterns no longer match them", seen[kind], kind)
		}
	}
}

// goIdents returns pkg.Name for the exported top-level identifiers (and
// methods, as pkg.Type.Method's Type) of the packages under root.
func goIdents(t *testing.T, root string, pkgs ...string) map[string]bool {
	out := map[string]bool{}
	for _, p := range pkgs {
		files, _ := filepath.Glob(filepath.Join(root, p, "*.go"))
		fset := token.NewFileSet()
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			af, err := parser.ParseFile(fset, f, nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			for _, decl := range af.Decls {
				switch d := decl.(type) {
				case *ast.FuncDecl:
					if d.Recv == nil {
						out[p+"."+d.Name.Name] = true
					}
				case *ast.GenDecl:
					for _, s := range d.Specs {
						switch s := s.(type) {
						case *ast.TypeSpec:
							out[p+"."+s.Name.Name] = true
						case *ast.ValueSpec:
							for _, n := range s.Names {
								out[p+"."+n.Name] = true
							}
						}
					}
				}
			}
		}
	}
	return out
}
