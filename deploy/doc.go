// Package deploy holds Go-KVDB's container deployment and its tests; it has
// no code of its own.
//
//   - Dockerfile and build.sh: one image FROM scratch with both static
//     binaries, built without a registry (./deploy/build.sh).
//   - prometheus.yml and grafana/: the monitoring profile of the top-level
//     docker-compose.yml, and the dashboard grafana/dashboards/kvdb.json.
//
// The tests check the dashboard offline (every panel's queries parse),
// against a real Prometheus scraping a real cluster of processes (every
// query returns data; skipped without the prometheus binary), and the
// compose cluster under container faults (KVDB_DOCKER_TESTS=1 and a
// Docker engine; see docker_test.go).
package deploy
