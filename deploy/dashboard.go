// Package deploy holds the deployment files (Compose, Kubernetes, Grafana,
// Prometheus rules); its tests validate them offline. DashboardQueries
// reads the dashboard for those tests and the end-to-end ones.
package deploy

import (
	"encoding/json"
	"os"
	"strings"
)

// DashboardQueries returns the PromQL of every panel target of the Grafana
// dashboard at path, and of its main panels (description "main panel…"),
// with Grafana's variables replaced: the rate and plain intervals by
// interval, $job and $instance by ".*".
func DashboardQueries(path, interval string) (all, main []string, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	var d struct {
		Panels []struct {
			Description string `json:"description"`
			Targets     []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, nil, err
	}
	vars := strings.NewReplacer("$__rate_interval", interval, "$__interval", interval, "$job", ".*", "$instance", ".*")
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			e := vars.Replace(tg.Expr)
			all = append(all, e)
			if strings.HasPrefix(p.Description, "main panel") {
				main = append(main, e)
			}
		}
	}
	return all, main, nil
}
