package deploy

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

// What Grafana does with a dashboard's template variables, modelled for
// the tests so that they can run a panel's query as Grafana would send it:
// the options a query variable lists (the Prometheus data source's
// label_values), the value a variable starts with, and how $var, ${var},
// [[var]] and ${var:format} are replaced. The rules are Grafana's own: the
// variable syntax of its template service (VARIABLE_REGEX), the Prometheus
// data source's interpolateQueryExpr (values of a multi-value or All
// variable regex-escaped, two backslashes each since they land in a PromQL
// string, and joined as (a|b)), a custom all value inserted as it is, and
// a current value checked against the options as a dashboard load does
// (by value, then by text, else the first option). What is not modelled
// (field paths, a variable's regex, other formats) is an error, never a
// guess.

// variable is a template variable as the dashboard JSON spells it.
type variable struct {
	Name        string          `json:"name"`
	Label       string          `json:"label"`
	Description string          `json:"description"`
	Type        string          `json:"type"`
	Query       json.RawMessage `json:"query"`
	Definition  string          `json:"definition"`
	Datasource  *datasourceRef  `json:"datasource"`
	Multi       bool            `json:"multi"`
	IncludeAll  bool            `json:"includeAll"`
	AllValue    string          `json:"allValue"`
	Regex       string          `json:"regex"`
	Sort        int             `json:"sort"`
	Refresh     int             `json:"refresh"`
	Current     struct {
		Text  stringOrList `json:"text"`
		Value stringOrList `json:"value"`
	} `json:"current"`
}

// datasourceRef is a panel's, a target's or a variable's data source.
type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// stringOrList is a current text or value: a string, or a list for a
// multi-value variable.
type stringOrList []string

func (s *stringOrList) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*s = stringOrList{one}
		return nil
	}
	var list []string
	if err := json.Unmarshal(b, &list); err != nil {
		return fmt.Errorf("current text or value %s: want a string or a list of strings", b)
	}
	*s = list
	return nil
}

// queryText is the variable's query: a string, or {"query": …} as newer
// query editors save it.
func (v variable) queryText() (string, error) {
	var s string
	if err := json.Unmarshal(v.Query, &s); err == nil {
		return s, nil
	}
	var obj struct {
		Query string `json:"query"`
	}
	if err := json.Unmarshal(v.Query, &obj); err != nil {
		return "", fmt.Errorf("variable %s: query %s: %w", v.Name, v.Query, err)
	}
	return obj.Query, nil
}

// option is one value a variable lists, with the text shown for it.
type option struct{ text, value string }

// allValue is what Grafana stores as the current value when All is picked.
const allValue = "$__all"

// binding is what a variable stands for in one view of the dashboard.
type binding struct {
	v       variable
	options []option
	all     bool     // All is picked
	values  []string // else the values picked
}

// bind picks the variable's current value given its options, as a
// dashboard load does.
func (v variable) bind(options []option) binding {
	b := binding{v: v, options: options}
	cur := v.Current.Value
	if len(cur) > 0 && cur[0] == allValue {
		if v.IncludeAll {
			b.all = true
			return b
		}
		cur = nil
	}
	has := func(val string) bool {
		return slices.ContainsFunc(options, func(o option) bool { return o.value == val })
	}
	if v.Multi {
		for _, val := range cur {
			if has(val) {
				b.values = append(b.values, val)
			}
		}
	} else if len(cur) > 0 && has(cur[0]) {
		b.values = cur[:1]
	} else if i := slices.IndexFunc(options, func(o option) bool { return len(v.Current.Text) > 0 && o.text == v.Current.Text[0] }); i >= 0 {
		b.values = []string{options[i].value}
	}
	if len(b.values) == 0 && len(options) > 0 {
		b.values = []string{options[0].value}
	}
	return b
}

// pickAll is the binding with every option picked one by one (not All).
func (b binding) pickAll() binding {
	b.all, b.values = false, nil
	for _, o := range b.options {
		b.values = append(b.values, o.value)
	}
	return b
}

// selected is what the binding hands to a query: every option for All.
func (b binding) selected() []string {
	if !b.all {
		return b.values
	}
	vals := make([]string, len(b.options))
	for i, o := range b.options {
		vals[i] = o.value
	}
	return vals
}

// format renders the binding into a Prometheus query; format "" is the
// data source's own interpolateQueryExpr.
func (b binding) format(format string) (string, error) {
	if b.all && b.v.AllValue != "" {
		return b.v.AllValue, nil // a custom all value goes in as it is, in every format
	}
	vals := b.selected()
	list := b.v.Multi || b.v.IncludeAll // Grafana hands these over as a list
	switch format {
	case "":
		if !list {
			return promEscaper.Replace(first(vals)), nil
		}
		return joinAlternatives(vals, promRegexEscape), nil
	case "regex":
		return joinAlternatives(vals, jsEscapeRegex), nil
	case "pipe":
		return strings.Join(vals, "|"), nil
	case "raw":
		return strings.Join(vals, ","), nil // JavaScript's String(array)
	}
	return "", fmt.Errorf("format %q is not modelled", format)
}

func first(vals []string) string {
	if len(vals) == 0 {
		return ""
	}
	return vals[0]
}

// joinAlternatives escapes each value; one stands alone, more are (a|b).
func joinAlternatives(vals []string, escape func(string) string) string {
	esc := make([]string, len(vals))
	for i, v := range vals {
		esc[i] = escape(v)
	}
	if len(esc) == 1 {
		return esc[0]
	}
	return "(" + strings.Join(esc, "|") + ")"
}

// promEscaper is the data source's prometheusRegularEscape for a value of
// a single-value variable: backslashes doubled, single quotes escaped.
var promEscaper = strings.NewReplacer(`\`, `\\`, `'`, `\\'`)

// promRegexEscape is the data source's prometheusSpecialRegexEscape: a
// regex metacharacter gets two backslashes (the PromQL string literal
// keeps one for the regex), a backslash becomes four.
func promRegexEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '\\':
			b.WriteString(`\\\\`)
		case strings.ContainsRune(`$^*{}[]+?.()|`, r):
			b.WriteString(`\\`)
			b.WriteRune(r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// jsEscapeRegex is @grafana/data's escapeRegex, the ${var:regex} format:
// one backslash before each metacharacter.
func jsEscapeRegex(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`\^$*+?.()|[]{}/`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// bindings maps a variable's name to its binding.
type bindings map[string]binding

// variableRef is Grafana's VARIABLE_REGEX: $var | [[var]] or [[var:fmt]] |
// ${var}, ${var.field} or ${var:fmt}.
var variableRef = regexp.MustCompile(`\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^\}]+))?(?::([^\}]+))?\}`)

// interpolate replaces every variable reference in a query as Grafana
// does, or fails naming each reference to no variable.
func (bs bindings) interpolate(expr string) (string, error) {
	var errs []error
	out := variableRef.ReplaceAllStringFunc(expr, func(ref string) string {
		m := variableRef.FindStringSubmatch(ref)
		name, format := m[1]+m[2]+m[4], m[3]+m[6]
		if m[5] != "" {
			errs = append(errs, fmt.Errorf("%s: field paths are not modelled", ref))
			return ref
		}
		b, ok := bs[name]
		if !ok {
			errs = append(errs, fmt.Errorf("%s: no variable %q", ref, name))
			return ref
		}
		s, err := b.format(format)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", ref, err))
			return ref
		}
		return s
	})
	return out, errors.Join(errs...)
}

// referencedVariables lists the names a text refers to, in order.
func referencedVariables(s string) []string {
	var names []string
	for _, m := range variableRef.FindAllStringSubmatch(s, -1) {
		names = append(names, m[1]+m[2]+m[4])
	}
	return names
}

// dashboardRange is the time range the dashboard opens with (now-30m to
// now); Grafana asks for variable options over it.
const dashboardRange = 30 * time.Minute

// labelValuesQuery is the Prometheus data source's label_values(label) or
// label_values(selector, label).
var labelValuesQuery = regexp.MustCompile(`^label_values\((?:(.+),\s*)?([a-zA-Z_$][a-zA-Z0-9_]*)\)\s*$`)

// bindVariables binds every variable in the dashboard's order, asking
// Prometheus for the options of query variables; ds is the data source a
// datasource variable lists.
func bindVariables(hc *http.Client, promURL string, vars []variable, ds option) (bindings, error) {
	bs := bindings{}
	for _, v := range vars {
		if v.Regex != "" {
			return nil, fmt.Errorf("variable %s: a regex is not modelled", v.Name)
		}
		var options []option
		switch v.Type {
		case "datasource":
			options = []option{ds}
		case "query":
			q, err := v.queryText()
			if err != nil {
				return nil, err
			}
			if q, err = bs.interpolate(q); err != nil {
				return nil, fmt.Errorf("variable %s: %w", v.Name, err)
			}
			vals, err := labelValues(hc, promURL, q)
			if err != nil {
				return nil, fmt.Errorf("variable %s: %w", v.Name, err)
			}
			switch v.Sort {
			case 0:
			case 1:
				slices.Sort(vals)
			default:
				return nil, fmt.Errorf("variable %s: sort %d is not modelled", v.Name, v.Sort)
			}
			for _, val := range vals {
				options = append(options, option{text: val, value: val})
			}
		default:
			return nil, fmt.Errorf("variable %s: type %q is not modelled", v.Name, v.Type)
		}
		bs[v.Name] = v.bind(options)
	}
	return bs, nil
}

// labelValues runs a label_values query the way the data source does,
// through Prometheus' label values API.
func labelValues(hc *http.Client, promURL, query string) ([]string, error) {
	m := labelValuesQuery.FindStringSubmatch(query)
	if m == nil {
		return nil, fmt.Errorf("query %q: only label_values is modelled", query)
	}
	now := time.Now()
	params := url.Values{
		"start": {strconv.FormatInt(now.Add(-dashboardRange).Unix(), 10)},
		"end":   {strconv.FormatInt(now.Unix(), 10)},
	}
	if m[1] != "" {
		params.Set("match[]", m[1])
	}
	code, raw, err := send(hc, "GET", promURL+"/api/v1/label/"+m[2]+"/values?"+params.Encode(), nil)
	if err != nil {
		return nil, fmt.Errorf("label values %q: %w", query, err)
	}
	var ans struct {
		Status string   `json:"status"`
		Error  string   `json:"error"`
		Data   []string `json:"data"`
	}
	if err := json.Unmarshal(raw, &ans); err != nil {
		return nil, fmt.Errorf("label values %q: answer %d %s: %w", query, code, raw, err)
	}
	if ans.Status != "success" {
		return nil, fmt.Errorf("label values %q: prometheus: %s", query, ans.Error)
	}
	return ans.Data, nil
}

// TestDashboardVariablesInterpolateAsGrafana pins the substitution to Grafana's rules, and
// checks that what it writes into a matcher is a PromQL string whose regex
// matches exactly the values picked.
func TestDashboardVariablesInterpolateAsGrafana(t *testing.T) {
	addrs := []option{{"10.0.0.1:8080", "10.0.0.1:8080"}, {"10.0.0.2:8081", "10.0.0.2:8081"}}
	multi := variable{Name: "instance", Multi: true, IncludeAll: true}
	customAll := multi
	customAll.AllValue = ".*"
	single := variable{Name: "job"}
	bs := func(b binding) bindings { return bindings{b.v.Name: b} }
	cases := []struct {
		name string
		bs   bindings
		expr string
		want string
	}{
		{"single value: quotes and backslashes escaped", bs(binding{v: single, values: []string{`a'b\c`}}),
			`up{job="$job"}`, `up{job="a\\'b\\c"}`},
		{"one of a multi-value: regex-escaped, no parentheses", bs(binding{v: multi, options: addrs, values: []string{"10.0.0.1:8080"}}),
			`up{instance=~"$instance"}`, `up{instance=~"10\\.0\\.0\\.1:8080"}`},
		{"two picked: (a|b)", bs(binding{v: multi, options: addrs, values: []string{"10.0.0.1:8080", "10.0.0.2:8081"}}),
			`up{instance=~"${instance}"}`, `up{instance=~"(10\\.0\\.0\\.1:8080|10\\.0\\.0\\.2:8081)"}`},
		{"All without an all value: every option", bs(binding{v: multi, options: addrs, all: true}),
			`up{instance=~"[[instance]]"}`, `up{instance=~"(10\\.0\\.0\\.1:8080|10\\.0\\.0\\.2:8081)"}`},
		{"All with an all value: as it is, whatever the format", bs(binding{v: customAll, options: addrs, all: true}),
			`up{instance=~"$instance"} ${instance:regex}`, `up{instance=~".*"} .*`},
		{"regex format: one backslash", bs(binding{v: multi, options: addrs, all: true}),
			`${instance:regex}`, `(10\.0\.0\.1:8080|10\.0\.0\.2:8081)`},
		{"pipe and raw formats", bs(binding{v: multi, options: addrs, all: true}),
			`${instance:pipe} ${instance:raw}`, `10.0.0.1:8080|10.0.0.2:8081 10.0.0.1:8080,10.0.0.2:8081`},
		{"special characters in a multi-value", bs(binding{v: multi, values: []string{`a.b+c\d`}}),
			`$instance`, `a\\.b\\+c\\\\d`},
	}
	for _, c := range cases {
		got, err := c.bs.interpolate(c.expr)
		if err != nil || got != c.want {
			t.Errorf("%s: interpolate(%q) = %q, %v, want %q", c.name, c.expr, got, err, c.want)
		}
	}

	for _, expr := range []string{`$instancex`, `${instance:csv}`, `${instance.field}`, `$__rate_interval`} {
		if got, err := bs(binding{v: multi, options: addrs, all: true}).interpolate(expr); err == nil {
			t.Errorf("interpolate(%q) = %q, nil, want an error", expr, got)
		}
	}

	// What lands in the matcher selects exactly the picked values.
	b := binding{v: multi, options: addrs, values: []string{"10.0.0.1:8080"}}
	for _, picked := range []binding{b, b.pickAll()} {
		expr, err := bs(picked).interpolate(`up{instance=~"$instance"}`)
		if err != nil {
			t.Fatal(err)
		}
		sel, err := parser.ParseExpr(expr)
		if err != nil {
			t.Fatalf("parse %q: %v", expr, err)
		}
		var m *labels.Matcher
		for _, lm := range sel.(*parser.VectorSelector).LabelMatchers {
			if lm.Name == "instance" {
				m = lm
			}
		}
		for _, addr := range append(picked.selected(), "10.0.0.3:8080", "10a0b0c1:8080") {
			if got, want := m.Matches(addr), slices.Contains(picked.selected(), addr); got != want {
				t.Errorf("%s: matches %q = %v, want %v", expr, addr, got, want)
			}
		}
	}
}

// TestDashboardVariablesBindAsGrafana checks how a current value is checked against the
// options on load.
func TestDashboardVariablesBindAsGrafana(t *testing.T) {
	opts := []option{{"Prometheus", "uid-1"}, {"Other", "uid-2"}}
	v := func(text, value string, multi bool) variable {
		var x variable
		x.Multi, x.Current.Text, x.Current.Value = multi, stringOrList{text}, stringOrList{value}
		return x
	}
	cases := []struct {
		name string
		v    variable
		want []string
	}{
		{"by value", v("Other", "uid-1", false), []string{"uid-1"}},
		{"by text when the value is unknown", v("Other", "${DS_PROMETHEUS}", false), []string{"uid-2"}},
		{"else the first option", v("Nope", "nope", false), []string{"uid-1"}},
		{"multi: the known values", v("", "uid-2", true), []string{"uid-2"}},
		{"All without includeAll: the first option", v("All", allValue, true), []string{"uid-1"}},
	}
	for _, c := range cases {
		if got := c.v.bind(opts); got.all || !slices.Equal(got.values, c.want) {
			t.Errorf("%s: bind = all %v, %q, want %q", c.name, got.all, got.values, c.want)
		}
	}
	all := v("All", allValue, true)
	all.IncludeAll = true
	if got := all.bind(opts); !got.all || !slices.Equal(got.selected(), []string{"uid-1", "uid-2"}) {
		t.Errorf("All: bind = all %v, %q, want All of %q", got.all, got.selected(), []string{"uid-1", "uid-2"})
	}
}
