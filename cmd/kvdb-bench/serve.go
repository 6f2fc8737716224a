package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
)

// serveCommand is the hidden first argument that turns kvdb-bench into one
// of the ceiling servers of rows 1 and 2.
const serveCommand = "serve-ceiling"

// serveMain runs a ceiling server until SIGTERM:
//
//	-mode=echo -body=FILE            answers GET /get with the file's bytes
//	-mode=bolt -db=FILE -docs=FILE   loads the JSON lines of docs into a
//	                                 BoltDB file as keys k00000…, then
//	                                 answers GET /get?k=KEY with the value,
//	                                 read in one read transaction
//
// Both are as lean as net/http allows: a fixed Content-Length, no
// framework, no per-request allocation beyond net/http's own. They are the
// ceilings the router's rows are divided by.
func serveMain(args []string) int {
	fs := flag.NewFlagSet(serveCommand, flag.ContinueOnError)
	mode := fs.String("mode", "", "echo or bolt")
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	bodyFile := fs.String("body", "", "echo: the body to answer")
	dbFile := fs.String("db", "", "bolt: the BoltDB file to create")
	docsFile := fs.String("docs", "", "bolt: JSON lines to load, one value per line")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok")) })
	switch *mode {
	case "echo":
		body, err := os.ReadFile(*bodyFile)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		n := strconv.Itoa(len(body))
		mux.HandleFunc("GET /get", func(w http.ResponseWriter, _ *http.Request) {
			h := w.Header()
			h["Content-Type"] = []string{"application/json"}
			h["Content-Length"] = []string{n}
			w.Write(body)
		})
	case "bolt":
		db, err := loadBolt(*dbFile, *docsFile)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer db.Close()
		pool := sync.Pool{New: func() any { b := make([]byte, 0, 8192); return &b }}
		mux.HandleFunc("GET /get", func(w http.ResponseWriter, r *http.Request) {
			bp := pool.Get().(*[]byte)
			defer pool.Put(bp)
			buf := (*bp)[:0]
			key := r.URL.Query().Get("k")
			found := false
			db.View(func(tx *bolt.Tx) error {
				if v := tx.Bucket(boltBucket).Get([]byte(key)); v != nil {
					buf, found = append(buf, v...), true
				}
				return nil
			})
			*bp = buf
			if !found {
				http.NotFound(w, r)
				return
			}
			h := w.Header()
			h["Content-Type"] = []string{"application/json"}
			h["Content-Length"] = []string{strconv.Itoa(len(buf))}
			w.Write(buf)
		})
	default:
		fmt.Fprintf(os.Stderr, "-mode %q: want echo or bolt\n", *mode)
		return 2
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

var boltBucket = []byte("docs")

// loadBolt creates path and stores each line of docs under k00000, k00001…
func loadBolt(path, docs string) (*bolt.DB, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return nil, err
	}
	f, err := os.Open(docs)
	if err != nil {
		db.Close()
		return nil, err
	}
	defer f.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(boltBucket)
		if err != nil {
			return err
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 0, 1<<20), 16<<20)
		for i := 0; sc.Scan(); i++ {
			if err := b.Put([]byte(docKey(i)), append([]byte(nil), sc.Bytes()...)); err != nil {
				return err
			}
		}
		return sc.Err()
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("load %s into %s: %w", docs, path, err)
	}
	return db, nil
}

// docKey names the i-th document everywhere: in BoltDB, Redis and the router.
func docKey(i int) string { return fmt.Sprintf("k%05d", i) }
