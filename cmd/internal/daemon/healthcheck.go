package daemon

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// HealthcheckCommand is the subcommand that probes a running daemon:
// `router healthcheck`, `storaged healthcheck`. Images built FROM scratch
// have no shell and no curl, so the binary checks itself.
const HealthcheckCommand = "healthcheck"

// Healthcheck runs the healthcheck subcommand: it GETs the daemon's
// /healthz (by default on defaultAddr, the daemon's default listen
// address) and returns nil on 200, an error naming the problem otherwise,
// so the process exits 0 or 1. args are the subcommand's own flags.
func Healthcheck(ctx context.Context, name, defaultAddr string, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet(name+" "+HealthcheckCommand, flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", "http://"+defaultAddr+"/healthz", "health endpoint to GET")
	timeout := fs.Duration("timeout", 2*time.Second, "how long to wait for the answer")
	if err := ParseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return Usagef("%s: unexpected arguments: %s", HealthcheckCommand, strings.Join(fs.Args(), " "))
	}
	if *timeout <= 0 {
		return Usagef("-timeout %s: must be positive", *timeout)
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, *url, nil)
	if err != nil {
		return Usagef("-url %q: %v", *url, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("unhealthy: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("unhealthy: GET %s: %s: %s", *url, resp.Status, strings.TrimSpace(string(body)))
	}
	fmt.Fprintf(stdout, "healthy: %s\n", strings.TrimSpace(string(body)))
	return nil
}

// IsHealthcheck reports whether args invoke the healthcheck subcommand.
func IsHealthcheck(args []string) bool {
	return len(args) > 0 && args[0] == HealthcheckCommand
}
