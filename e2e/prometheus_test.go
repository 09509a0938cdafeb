package e2e_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imstream/imstream/deploy"
	"github.com/imstream/imstream/internal/tools/testkit"
)

// mainQueries returns the dashboard's main-panel queries.
func mainQueries(t *testing.T) []string {
	t.Helper()
	_, main, err := deploy.DashboardQueries("../deploy/grafana/imstream.json", "30s")
	if err != nil {
		t.Fatal(err)
	}
	return main
}

// TestPrometheusScrapesDev: Debian's prometheus, started on loopback,
// scrapes `imstream dev` and answers every main dashboard query with data.
func TestPrometheusScrapesDev(t *testing.T) {
	if _, err := exec.LookPath("prometheus"); err != nil {
		t.Fatal("prometheus not found: run `make test`, which installs Debian's prometheus package")
	}
	bin := testkit.Binary(t, "..")
	_, admin := testkit.StartOnFreePort(t, bin, func(admin string) []string {
		return []string{"dev", "--kafka-port", "0", "--admin.listen", admin, "--gateway.listen", "127.0.0.1:0", "--rate", "300",
			"--presence.gc_interval", "2s"}
	})
	dir := t.TempDir()
	conf := filepath.Join(dir, "prometheus.yml")
	os.WriteFile(conf, []byte("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: imstream\n    static_configs:\n      - targets: ['"+admin+"']\n"), 0o644)
	_, web := testkit.StartOnFreePort(t, "/usr/bin/prometheus", func(web string) []string {
		return []string{"--config.file=" + conf, "--storage.tsdb.path=" + filepath.Join(dir, "data"), "--web.listen-address=" + web}
	})
	queries := mainQueries(t)
	if len(queries) < 8 {
		t.Fatalf("only %d main queries", len(queries))
	}
	empty := map[string]bool{}
	for _, q := range queries {
		empty[q] = true
	}
	deadline := time.Now().Add(90 * time.Second)
	for len(empty) > 0 && time.Now().Before(deadline) {
		for q := range empty {
			resp, err := http.Get("http://" + web + "/api/v1/query?query=" + url.QueryEscape(q))
			if err != nil {
				continue
			}
			var r struct {
				Status string `json:"status"`
				Error  string `json:"error"`
				Data   struct {
					Result []json.RawMessage `json:"result"`
				} `json:"data"`
			}
			_ = json.NewDecoder(resp.Body).Decode(&r)
			resp.Body.Close()
			if r.Status == "error" {
				t.Fatalf("query %q: %s", q, r.Error)
			}
			if len(r.Data.Result) > 0 && !strings.Contains(string(r.Data.Result[0]), `"NaN"`) {
				delete(empty, q)
			}
		}
		time.Sleep(time.Second)
	}
	for q := range empty {
		t.Errorf("no data for main query %s", q)
	}
}
