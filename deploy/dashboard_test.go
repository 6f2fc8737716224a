package deploy

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/promql/parser"
)

const dashboardPath = "grafana/dashboards/kvdb.json"

// dashboard is the part of a Grafana dashboard the tests read.
type dashboard struct {
	UID    string  `json:"uid"`
	Title  string  `json:"title"`
	Panels []panel `json:"panels"`
}

type panel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	} `json:"datasource"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
}

func loadDashboard(t testing.TB) dashboard {
	t.Helper()
	raw, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("parse %s: %v", dashboardPath, err)
	}
	return d
}

// TestDashboardQueriesParse checks the dashboard offline: it is JSON, every
// panel reads the provisioned Prometheus datasource, and every panel has
// at least one query, each of which PromQL's own parser accepts.
func TestDashboardQueriesParse(t *testing.T) {
	d := loadDashboard(t)
	if d.UID == "" || d.Title == "" || len(d.Panels) == 0 {
		t.Fatalf("dashboard uid %q, title %q, %d panels: want all set", d.UID, d.Title, len(d.Panels))
	}
	ids := map[int]bool{}
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel %q: duplicate id %d", p.Title, p.ID)
		}
		ids[p.ID] = true
		if p.Datasource.Type != "prometheus" || p.Datasource.UID != "kvdb-prometheus" {
			t.Errorf("panel %q: datasource %+v, want the provisioned prometheus (uid kvdb-prometheus)", p.Title, p.Datasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("panel %q target %s: empty expr", p.Title, tg.RefID)
				continue
			}
			if _, err := parser.ParseExpr(tg.Expr); err != nil {
				t.Errorf("panel %q target %s: %q does not parse: %v", p.Title, tg.RefID, tg.Expr, err)
			}
		}
	}
}

// TestDatasourceMatchesDashboard keeps the provisioning and the dashboard
// in step: the uid the panels name is the one provisioned.
func TestDatasourceMatchesDashboard(t *testing.T) {
	raw, err := os.ReadFile("grafana/provisioning/datasources/prometheus.yml")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), "uid: kvdb-prometheus") {
		t.Errorf("datasource provisioning does not declare uid kvdb-prometheus:\n%s", raw)
	}
}
