package main

import (
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/go-kvdb/go-kvdb/cmd/internal/daemon"
	"github.com/go-kvdb/go-kvdb/router/authfile"
)

const keygenCommand = "keygen"

func isKeygen(args []string) bool { return len(args) > 0 && args[0] == keygenCommand }

// keygen runs `router keygen -auth-file=FILE -name=NAME -role=ROLE
// [-topics=PATTERN,…]`: it adds a key to the auth file and prints its
// secret, alone on one line of stdout. The secret is shown this once; the
// file keeps only a salted hash of it.
func keygen(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("router "+keygenCommand, flag.ContinueOnError)
	fs.SetOutput(stderr)
	authFile := fs.String("auth-file", "", "the auth file (TOML) to add the key to; created when missing (required)")
	name := fs.String("name", "", "the key's name, as logs and the audit trail show it (required)")
	role := fs.String("role", "", "admin, writer or reader (required)")
	topics := fs.String("topics", "", "comma-separated topic glob patterns (path.Match) the key is limited to; empty: every topic")
	if err := daemon.ParseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case fs.NArg() > 0:
		return daemon.Usagef("%s: unexpected arguments: %s", keygenCommand, strings.Join(fs.Args(), " "))
	case *authFile == "":
		return daemon.Usagef("%s: -auth-file is required", keygenCommand)
	case *name == "":
		return daemon.Usagef("%s: -name is required", keygenCommand)
	case *role != string(authfile.RoleAdmin) && *role != string(authfile.RoleWriter) && *role != string(authfile.RoleReader):
		return daemon.Usagef("%s: -role %q must be admin, writer or reader", keygenCommand, *role)
	}
	var patterns []string
	for _, p := range strings.Split(*topics, ",") {
		if p = strings.TrimSpace(p); p != "" {
			patterns = append(patterns, p)
		}
	}
	secret, err := authfile.AddKey(*authFile, *name, authfile.Role(*role), patterns)
	if err != nil {
		return fmt.Errorf("%s: %w", keygenCommand, err)
	}
	fmt.Fprintln(stdout, secret)
	fmt.Fprintf(stderr, "router: key %q (%s) added to %s; send it as Authorization: Bearer <secret>; reload running routers with SIGHUP\n", *name, *role, *authFile)
	return nil
}
