package deploy

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

const (
	dashboardPath  = "grafana/dashboards/kvdb.json"
	datasourcePath = "grafana/provisioning/datasources/prometheus.yml"
)

// dashboard is the part of a Grafana dashboard the tests read.
type dashboard struct {
	UID      string  `json:"uid"`
	Title    string  `json:"title"`
	Inputs   []input `json:"__inputs"`
	Requires []struct {
		Type string `json:"type"`
		ID   string `json:"id"`
	} `json:"__requires"`
	Templating struct {
		List []variable `json:"list"`
	} `json:"templating"`
	Panels []panel `json:"panels"`
}

// input is what an import asks for and substitutes for ${name}.
type input struct {
	Name     string `json:"name"`
	Type     string `json:"type"`
	PluginID string `json:"pluginId"`
}

type panel struct {
	ID         int           `json:"id"`
	Type       string        `json:"type"`
	Title      string        `json:"title"`
	Datasource datasourceRef `json:"datasource"`
	Targets    []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
}

// role is one kind of Go-KVDB process: the job variable that selects its
// scrape jobs, and the metric only it exposes, by which a query tells its
// series from the other role's when both are scraped under one job.
type role struct {
	name, jobVar, marker string
}

var roles = []role{
	{name: "router", jobVar: "router_job", marker: "kvdb_cluster_epoch"},
	{name: "storaged", jobVar: "storaged_job", marker: "kvdb_node_info"},
}

// sharedMetric matches the metrics both roles expose (the live test checks
// that no other is shared): a query reading one must keep only its role's
// targets with `and on (job, instance) <marker>`.
var sharedMetric = regexp.MustCompile(`^kvdb_http_`)

// The names the dashboard's variables go by.
const (
	datasourceVar = "datasource"
	instanceVar   = "instance"
	datasourceIn  = "DS_PROMETHEUS" // the __inputs entry an import asks for
)

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

// query is one panel target: its expression and the role it reads.
type query struct {
	panel, refID, expr string
	role               *role // nil: it names no job variable
}

func (q query) String() string { return fmt.Sprintf("panel %q target %s", q.panel, q.refID) }

func (d dashboard) queries() []query {
	var qs []query
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			q := query{panel: p.Title, refID: tg.RefID, expr: tg.Expr}
			for i, r := range roles {
				if slices.Contains(referencedVariables(tg.Expr), r.jobVar) {
					q.role = &roles[i]
				}
			}
			qs = append(qs, q)
		}
	}
	return qs
}

// provisionedDatasource is the data source compose's Grafana provisions:
// its name and uid.
func provisionedDatasource(t testing.TB) option {
	t.Helper()
	raw, err := os.ReadFile(datasourcePath)
	if err != nil {
		t.Fatal(err)
	}
	field := func(key string) string {
		m := regexp.MustCompile(`(?m)^\s*-?\s*` + key + `:\s*(\S+)\s*$`).FindSubmatch(raw)
		if m == nil {
			t.Fatalf("%s declares no %s:\n%s", datasourcePath, key, raw)
		}
		return string(m[1])
	}
	if typ := field("type"); typ != "prometheus" {
		t.Fatalf("%s: type %s, want prometheus", datasourcePath, typ)
	}
	return option{text: field("name"), value: field("uid")}
}

// sampleBindings binds every variable to made-up options, All picked, for
// checks that need no Prometheus; the addresses need regex escaping.
func sampleBindings(d dashboard) bindings {
	bs := bindings{}
	for _, v := range d.Templating.List {
		opts := []option{{"kvdb-a", "kvdb-a"}, {"10.0.0.1:8080", "10.0.0.1:8080"}}
		if v.Type == "datasource" {
			opts = []option{{"Prometheus", "uid"}}
		}
		b := v.bind(opts)
		if v.IncludeAll {
			b.all = true
		}
		bs[v.Name] = b
	}
	return bs
}

// TestDashboardQueriesParse checks the dashboard offline: it is JSON, every
// panel reads the Prometheus the datasource variable picks, and every panel
// has at least one query, which PromQL's own parser accepts as written and
// as Grafana sends it.
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
		if want := (datasourceRef{"prometheus", "${" + datasourceVar + "}"}); p.Datasource != want {
			t.Errorf("panel %q: datasource %+v, want %+v", p.Title, p.Datasource, want)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
	}
	bs := sampleBindings(d)
	for _, q := range d.queries() {
		if strings.TrimSpace(q.expr) == "" {
			t.Errorf("%s: empty expr", q)
			continue
		}
		if _, err := parser.ParseExpr(q.expr); err != nil {
			t.Errorf("%s: %q does not parse: %v", q, q.expr, err)
		}
		sent, err := bs.interpolate(q.expr)
		if err != nil {
			t.Errorf("%s: %v", q, err)
			continue
		}
		if _, err := parser.ParseExpr(sent); err != nil {
			t.Errorf("%s: %q as sent does not parse: %v", q, sent, err)
		}
	}
}

// TestDatasourceMatchesDashboard keeps the provisioning and the dashboard
// in step. File provisioning ignores __inputs, so the datasource
// variable's default value is the input (an import replaces it with the
// data source picked) and its default text the provisioned data source's
// name, which Grafana falls back to when no data source has that value.
func TestDatasourceMatchesDashboard(t *testing.T) {
	ds := provisionedDatasource(t)
	if ds.value != "kvdb-prometheus" {
		t.Errorf("datasource provisioning declares uid %s, want kvdb-prometheus", ds.value)
	}
	d := loadDashboard(t)
	i := slices.IndexFunc(d.Templating.List, func(v variable) bool { return v.Name == datasourceVar })
	if i < 0 {
		t.Fatalf("no variable %q", datasourceVar)
	}
	v := d.Templating.List[i]
	if v.Type != "datasource" || string(v.Query) != `"prometheus"` {
		t.Errorf("variable %s: type %q, query %s, want datasource, \"prometheus\"", v.Name, v.Type, v.Query)
	}
	if want := (stringOrList{"${" + datasourceIn + "}"}); !slices.Equal(v.Current.Value, want) {
		t.Errorf("variable %s: current value %q, want %q", v.Name, v.Current.Value, want)
	}
	if want := (stringOrList{ds.text}); !slices.Equal(v.Current.Text, want) {
		t.Errorf("variable %s: current text %q, want %q (the provisioned data source)", v.Name, v.Current.Text, want)
	}
	if got := v.bind([]option{{"Other", "other-uid"}, ds}).values; !slices.Equal(got, []string{ds.value}) {
		t.Errorf("variable %s binds to %q under provisioning, want %q", v.Name, got, ds.value)
	}
}

// TestDashboardTemplating checks what makes the dashboard fit any
// Prometheus: grafana.com-style __inputs and __requires, the conventional
// variables, every data source reference through the datasource variable,
// and every series selector scoped by the variables, never by a job name.
func TestDashboardTemplating(t *testing.T) {
	raw, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	d := loadDashboard(t)

	if len(d.Inputs) != 1 || d.Inputs[0].Name != datasourceIn || d.Inputs[0].Type != "datasource" || d.Inputs[0].PluginID != "prometheus" {
		t.Errorf("__inputs = %+v, want one datasource input %s for plugin prometheus", d.Inputs, datasourceIn)
	}
	for _, in := range d.Inputs {
		if !strings.Contains(string(raw), "${"+in.Name+"}") {
			t.Errorf("input %s is used nowhere: an import would ask for it for nothing", in.Name)
		}
	}
	for _, m := range regexp.MustCompile(`\$\{(DS_\w+)\}`).FindAllStringSubmatch(string(raw), -1) {
		if !slices.ContainsFunc(d.Inputs, func(in input) bool { return in.Name == m[1] }) {
			t.Errorf("${%s} names no input", m[1])
		}
	}
	required := map[string]bool{}
	for _, r := range d.Requires {
		required[r.Type+"/"+r.ID] = true
	}
	want := []string{"grafana/grafana", "datasource/prometheus"}
	for _, p := range d.Panels {
		want = append(want, "panel/"+p.Type)
	}
	for _, w := range want {
		if !required[w] {
			t.Errorf("__requires lacks %s", w)
		}
	}

	// Every data source reference anywhere goes through the variable.
	var tree any
	if err := json.Unmarshal(raw, &tree); err != nil {
		t.Fatal(err)
	}
	wantRef := map[string]any{"type": "prometheus", "uid": "${" + datasourceVar + "}"}
	walkJSON(tree, "", func(path string, key string, value any) {
		if key != "datasource" {
			return
		}
		if ref, ok := value.(map[string]any); !ok || len(ref) != 2 || ref["type"] != wantRef["type"] || ref["uid"] != wantRef["uid"] {
			t.Errorf("%s = %v, want %v", path, value, wantRef)
		}
	})

	// The variables: the data source, then one job variable per role over
	// the role's marker, then the instances of those jobs; each lists only
	// Go-KVDB targets and offers All.
	defined := map[string]int{}
	for i, v := range d.Templating.List {
		defined[v.Name] = i
		for _, ref := range referencedVariables(string(v.Query)) {
			if j, ok := defined[ref]; !ok || j >= i {
				t.Errorf("variable %s refers to $%s, which is not defined before it", v.Name, ref)
			}
		}
	}
	if _, ok := defined[datasourceVar]; !ok {
		t.Errorf("no variable %q", datasourceVar)
	}
	type listing struct{ label, metric string } // metric "": any kvdb_ metric
	wantQuery := map[string]listing{instanceVar: {label: "instance"}}
	for _, r := range roles {
		wantQuery[r.jobVar] = listing{label: "job", metric: r.marker}
	}
	for name, w := range wantQuery {
		i, ok := defined[name]
		if !ok {
			t.Errorf("no variable %q", name)
			continue
		}
		v := d.Templating.List[i]
		if v.Type != "query" || v.Datasource == nil || *v.Datasource != (datasourceRef{"prometheus", "${" + datasourceVar + "}"}) {
			t.Errorf("variable %s: type %q, datasource %+v, want a query on ${%s}", name, v.Type, v.Datasource, datasourceVar)
		}
		if !v.Multi || !v.IncludeAll || v.Refresh == 0 || v.Label == "" {
			t.Errorf("variable %s: multi %v, includeAll %v, refresh %d, label %q: want multi-select with All, refreshed, labelled",
				name, v.Multi, v.IncludeAll, v.Refresh, v.Label)
		}
		q, err := v.queryText()
		if err != nil {
			t.Error(err)
			continue
		}
		m := labelValuesQuery.FindStringSubmatch(q)
		if m == nil || m[2] != w.label || m[1] == "" {
			t.Errorf("variable %s: query %q, want label_values(<kvdb metric>, %s)", name, q, w.label)
			continue
		}
		sel, err := parser.ParseMetricSelector(m[1])
		if err != nil {
			t.Errorf("variable %s: selector %q: %v", name, m[1], err)
			continue
		}
		metric := ""
		for _, lm := range sel {
			if lm.Name == labels.MetricName && lm.Type == labels.MatchEqual {
				metric = lm.Value
			}
		}
		if !strings.HasPrefix(metric, "kvdb_") || (w.metric != "" && metric != w.metric) {
			t.Errorf("variable %s: options from metric %q, want %q (a kvdb_ metric)", name, metric, w.metric)
		}
	}

	// Every query refers only to defined variables, reads one role and the
	// picked instances, and scopes every selector by them.
	for _, q := range d.queries() {
		for _, ref := range referencedVariables(q.expr) {
			if _, ok := defined[ref]; !ok {
				t.Errorf("%s: $%s is not defined", q, ref)
			}
		}
		if q.role == nil || slices.Contains(referencedVariables(q.expr), otherRole(q.role).jobVar) {
			t.Errorf("%s: %s: want exactly one of $%s, $%s", q, q.expr, roles[0].jobVar, roles[1].jobVar)
			continue
		}
		expr, err := parser.ParseExpr(q.expr)
		if err != nil {
			t.Errorf("%s: %v", q, err)
			continue
		}
		for _, problem := range selectorProblems(expr, *q.role) {
			t.Errorf("%s: %s", q, problem)
		}
	}
}

func otherRole(r *role) role {
	if r.name == roles[0].name {
		return roles[1]
	}
	return roles[0]
}

// selectorProblems lists the selectors of expr that are not scoped to the
// role's jobs and the picked instances, and those of a shared metric that
// do not keep only the role's targets.
func selectorProblems(expr parser.Expr, r role) []string {
	var problems []string
	want := map[string]string{"job": "$" + r.jobVar, instanceVar: "$" + instanceVar}
	parser.Inspect(expr, func(node parser.Node, path []parser.Node) error {
		vs, ok := node.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		for name, value := range want {
			i := slices.IndexFunc(vs.LabelMatchers, func(m *labels.Matcher) bool { return m.Name == name })
			if i < 0 || vs.LabelMatchers[i].Type != labels.MatchRegexp || vs.LabelMatchers[i].Value != value {
				problems = append(problems, fmt.Sprintf("selector %s: want %s=~%q", vs, name, value))
			}
		}
		if sharedMetric.MatchString(vs.Name) && !keptToRole(node, path, r) {
			problems = append(problems, fmt.Sprintf("selector %s: both roles expose %s; want it on the left of `and on (job, instance) %s`", vs, vs.Name, r.marker))
		}
		return nil
	})
	return problems
}

// keptToRole reports whether node sits on the left of an `and on (job,
// instance)` with the role's marker on the right.
func keptToRole(node parser.Node, path []parser.Node, r role) bool {
	for i, anc := range path {
		be, ok := anc.(*parser.BinaryExpr)
		if !ok || be.Op != parser.LAND || be.VectorMatching == nil || !be.VectorMatching.On ||
			!slices.Contains(be.VectorMatching.MatchingLabels, "job") || !slices.Contains(be.VectorMatching.MatchingLabels, "instance") {
			continue
		}
		child := node
		if i+1 < len(path) {
			child = path[i+1]
		}
		if vs, ok := be.RHS.(*parser.VectorSelector); ok && vs.Name == r.marker && child == be.LHS {
			return true
		}
	}
	return false
}

// walkJSON calls fn for every key of every object in a decoded JSON tree.
func walkJSON(v any, path string, fn func(path, key string, value any)) {
	switch v := v.(type) {
	case map[string]any:
		for k, val := range v {
			p := path + "." + k
			fn(p, k, val)
			walkJSON(val, p, fn)
		}
	case []any:
		for i, val := range v {
			walkJSON(val, fmt.Sprintf("%s[%d]", path, i), fn)
		}
	}
}
