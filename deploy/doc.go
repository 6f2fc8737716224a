// Package deploy holds Go-KVDB's container deployment and its tests; it has
// no code of its own.
//
//   - Dockerfile and build.sh: one image FROM scratch with both static
//     binaries, built without a registry (./deploy/build.sh).
//   - prometheus.yml and grafana/: the monitoring profile of the top-level
//     docker-compose.yml, and the dashboard grafana/dashboards/kvdb.json.
//
// The dashboard has template variables (datasource, router_job,
// storaged_job, instance) and grafana.com-style __inputs, so it fits a
// Prometheus whatever its job names; grafana_test.go models how Grafana
// binds and substitutes those variables.
//
// The tests check the dashboard offline (every panel's queries parse and
// are scoped by the variables), against real Prometheus servers scraping a
// real cluster of processes under three job namings (every query, as
// Grafana would send it, returns data and only its role's series; skipped
// without the prometheus binary), and the compose cluster under container
// faults (KVDB_DOCKER_TESTS=1 and a Docker engine; see docker_test.go).
package deploy
