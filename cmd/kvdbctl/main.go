// Command kvdbctl is Go-KVDB's command-line client. It talks to a router
// only: -url, else KVDB_URL, else http://127.0.0.1:8080; KVDB_API_KEY is
// sent as the API key.
//
//	kvdbctl [-url URL] [-o table|json] COMMAND [ARGS]
//
//	topics create|get|list|delete      contexts put|get|list|delete
//	search TOPIC QUERY                 chat TOPIC ID MESSAGE
//	cluster                            backup -o FILE
//	restore FILE [-dry-run]            verify FILE
//	compression status|train|rewrite
//
// Output is a table for people, JSON with -o json. Exit status: 0 on
// success, 1 when the router answers an error (or the work fails), 2 on a
// usage error.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/go-kvdb/go-kvdb/client"
)

const defaultURL = "http://127.0.0.1:8080"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

// usageError is a mistake in the command line: exit status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Sprintf(format, args...)}
}

// errSilent is a failure already reported (flag's own message, or help).
var errSilent = errors.New("reported")

// exitCode reports err on stderr and maps it to the exit status.
func exitCode(err error, stderr io.Writer) int {
	var ue *usageError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "kvdbctl: %s\nRun 'kvdbctl -h' for usage.\n", ue.msg)
		return 2
	case errors.Is(err, errSilent):
		return 2
	}
	fmt.Fprintf(stderr, "kvdbctl: %v\n", err)
	return 1
}

const usage = `Usage: kvdbctl [-url URL] [-o table|json] COMMAND [ARGS]

The router: -url, else $KVDB_URL, else ` + defaultURL + `; $KVDB_API_KEY is sent as the API key.

Commands:
  topics create NAME [-description D] [-max-tokens N] [-default-ttl SECONDS]
  topics get NAME
  topics list [-prefix P]
  topics delete NAME
  contexts put TOPIC [ID] [-f FILE]      a JSON document from FILE or stdin; without ID the router makes one
                  [-if-match ETAG] [-if-none-match]
  contexts get TOPIC ID
  contexts list TOPIC [-tag T]... [-model M] [-content] [-limit N]
  contexts delete TOPIC ID [-if-match ETAG]
  search TOPIC [-k N] [-tag T]... [-model M] [-mode vector|keyword|hybrid] [-content] QUERY...
  chat TOPIC ID [-model M] [-max-tokens N] MESSAGE...   streams the answer
  watch TOPIC [-since TOKEN] [-n N]       prints the topic's changes as they happen (-o json: one object a line)
  cluster                                 shards, their states, rebalance and repair progress
  backup -o FILE                          an online backup of the whole cluster, as one archive
  restore FILE [-dry-run]                 verifies FILE, then replays it (newer data is never overwritten)
  verify FILE                             checks an archive's checksums, without a cluster
  compression status                      the current zstd dictionary and the ones the router holds
  compression train [-rewrite]            trains a dictionary on stored contexts and makes it current
  compression rewrite [-no-wait]          re-encodes stored contexts with the current dictionary

Output: tables by default, JSON with -o json (backup's -o is its file).
Exit status: 0 success, 1 an error answer or failure, 2 a usage error.
`

// cli is one invocation: its settings and streams.
type cli struct {
	url    string
	format string // table or json
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	c      *client.Client
	// offline commands (verify) need no router: parse leaves c nil.
	offline bool
}

// globals registers the flags every command accepts.
func (x *cli) globals(fs *flag.FlagSet, withFormat bool) {
	fs.StringVar(&x.url, "url", x.url, "the router's URL")
	if withFormat {
		fs.StringVar(&x.format, "o", x.format, "output: table or json")
	}
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	x := &cli{url: os.Getenv("KVDB_URL"), format: "table", stdin: stdin, stdout: stdout, stderr: stderr}
	if x.url == "" {
		x.url = defaultURL
	}
	fs := flag.NewFlagSet("kvdbctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	x.globals(fs, true)
	if err := fs.Parse(args); err != nil {
		return flagErr(err)
	}
	rest := fs.Args()
	if len(rest) == 0 {
		fmt.Fprint(stderr, usage)
		return usagef("no command given")
	}
	cmd, rest := rest[0], rest[1:]
	sub := ""
	switch cmd {
	case "topics", "contexts":
		if len(rest) == 0 {
			return usagef("%s: which one? create, get, list or delete (contexts: put, get, list or delete)", cmd)
		}
		sub, rest = rest[0], rest[1:]
	case "compression":
		if len(rest) == 0 {
			return usagef("compression: which one? status, train or rewrite")
		}
		sub, rest = rest[0], rest[1:]
	case "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	var h func(context.Context, []string) error
	switch cmd + " " + sub {
	case "topics create":
		h = x.topicsCreate
	case "topics get":
		h = x.topicsGet
	case "topics list":
		h = x.topicsList
	case "topics delete":
		h = x.topicsDelete
	case "contexts put":
		h = x.contextsPut
	case "contexts get":
		h = x.contextsGet
	case "contexts list":
		h = x.contextsList
	case "contexts delete":
		h = x.contextsDelete
	case "search ":
		h = x.search
	case "chat ":
		h = x.chat
	case "watch ":
		h = x.watch
	case "cluster ":
		h = x.cluster
	case "backup ":
		h = x.backup
	case "restore ":
		h = x.restore
	case "verify ":
		h = x.verify
	case "compression status":
		h = x.compressionStatus
	case "compression train":
		h = x.compressionTrain
	case "compression rewrite":
		h = x.compressionRewrite
	default:
		return usagef("unknown command %q", strings.TrimSpace(cmd+" "+sub))
	}
	return h(ctx, rest)
}

// parse parses a command's flags (interleaved with its arguments, in any
// order) and checks the global settings; it returns the arguments.
func (x *cli) parse(fs *flag.FlagSet, args []string, min, max int, names string) ([]string, error) {
	fs.SetOutput(x.stderr)
	fs.Usage = func() {
		fmt.Fprintf(x.stderr, "Usage: kvdbctl %s %s\n", fs.Name(), names)
		fs.PrintDefaults()
	}
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, flagErr(err)
		}
		rest := fs.Args()
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			pos = append(pos, rest...) // after --, nothing is a flag
			break
		}
		if len(rest) == 0 {
			break
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	if len(pos) < min || (max >= 0 && len(pos) > max) {
		return nil, usagef("%s: want %s, got %d argument(s)", fs.Name(), names, len(pos))
	}
	if x.format != "table" && x.format != "json" {
		return nil, usagef("-o %q: want table or json", x.format)
	}
	if x.offline {
		return pos, nil
	}
	c, err := client.New(x.url, client.WithAPIKey(os.Getenv("KVDB_API_KEY")), client.WithUserAgent("kvdbctl"))
	if err != nil {
		return nil, usagef("%v", err)
	}
	x.c = c
	return pos, nil
}

func flagErr(err error) error {
	if errors.Is(err, flag.ErrHelp) {
		return err
	}
	return errSilent // the flag package printed the problem and the usage
}
