package storage

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
)

// Routes served by NewHandler. The client in this package is their only
// intended caller; the paths are versioned so a rolling upgrade can tell.
const (
	pathHealth       = "/healthz"
	pathInfo         = "/v1/info"
	pathGet          = "/v1/get/"
	pathApply        = "/v1/apply/"
	pathTxn          = "/v1/txn"
	pathScan         = "/v1/scan/"
	pathDeletePrefix = "/v1/delete-prefix/"
	pathMultiGet     = "/v1/multiget/"
	pathPurge        = "/v1/purge/"
	pathReindex      = "/v1/reindex"

	// headerEpoch carries the cluster-map epoch a write is sent under.
	headerEpoch = "X-Kvdb-Epoch"

	maxRequestBody = MaxValueSize + 16<<20
)

var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

func getBuf() *bytes.Buffer {
	b := bufPool.Get().(*bytes.Buffer)
	b.Reset()
	return b
}

func putBuf(b *bytes.Buffer) {
	if b.Cap() <= 1<<20 { // do not pin large buffers
		bufPool.Put(b)
	}
}

type handler struct {
	store *Store
	log   *slog.Logger
}

// NewHandler serves store over HTTP with the binary protocol that Client
// speaks. Errors are answered as {"error":{"code","message"}}.
func NewHandler(store *Store, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.Default()
	}
	h := &handler{store: store, log: log}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+pathHealth, h.health)
	mux.HandleFunc("GET "+pathInfo, h.info)
	mux.HandleFunc("GET "+pathGet+"{bucket}", h.get)
	mux.HandleFunc("POST "+pathApply+"{bucket}", h.apply)
	mux.HandleFunc("POST "+pathTxn, h.txn)
	mux.HandleFunc("GET "+pathScan+"{bucket}", h.scan)
	mux.HandleFunc("POST "+pathDeletePrefix+"{bucket}", h.deletePrefix)
	mux.HandleFunc("POST "+pathTopK+"{bucket}", h.topK)
	mux.HandleFunc("POST "+pathKeywordStats+"{bucket}", h.keywordStats)
	mux.HandleFunc("POST "+pathKeyword+"{bucket}", h.keyword)
	mux.HandleFunc("POST "+pathMultiGet+"{bucket}", h.multiGet)
	mux.HandleFunc("POST "+pathPurge+"{bucket}", h.purge)
	mux.HandleFunc("POST "+pathReindex, h.reindex)
	mux.HandleFunc("GET "+pathSnapshot, h.snapshot)
	mux.HandleFunc("GET "+pathChanges, h.changes)
	mux.HandleFunc("GET "+pathChangesHead, h.changesHead)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", "no route "+r.Method+" "+r.URL.Path)
	})
	return mux
}

func (h *handler) health(w http.ResponseWriter, r *http.Request) {
	hs, err := h.store.Health(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(hs)
}

func (h *handler) info(w http.ResponseWriter, r *http.Request) {
	info, err := h.store.Info(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(info)
}

// reindex serves POST /v1/reindex: 200 once the rebuild has started.
func (h *handler) reindex(w http.ResponseWriter, r *http.Request) {
	if err := h.store.Reindex(r.Context()); err != nil {
		h.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusOK)
}

func (h *handler) get(w http.ResponseWriter, r *http.Request) {
	rec, err := h.store.Get(r.Context(), r.PathValue("bucket"), []byte(r.URL.Query().Get("k")))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	buf := getBuf()
	defer putBuf(buf)
	buf.Write(appendStored(buf.AvailableBuffer(), rec.Version, rec.Tombstone, rec.Value))
	writeBinary(w, buf.Bytes())
}

func (h *handler) apply(w http.ResponseWriter, r *http.Request) {
	serveWrites(h, w, r, parseWrites, func(ctx context.Context, writes []Write) ([]Result, error) {
		return h.store.Apply(ctx, r.PathValue("bucket"), writes)
	})
}

// txn applies a transaction of writes to several buckets (Store.Txn).
func (h *handler) txn(w http.ResponseWriter, r *http.Request) {
	serveWrites(h, w, r, parseTxn, h.store.Txn)
}

// serveWrites reads and parses a request of writes, runs them, and answers
// their results: the one path of Apply and Txn.
func serveWrites[W any](h *handler, w http.ResponseWriter, r *http.Request, parse func([]byte) (W, error), run func(context.Context, W) ([]Result, error)) {
	// Tell the committer a write is on its way, so a commit under way can
	// wait for it instead of leaving it for the next fsync.
	h.store.arriving.Add(1)
	arrived := false
	defer func() {
		if !arrived {
			h.store.arriving.Add(-1)
		}
	}()
	body := getBuf()
	defer putBuf(body)
	if _, err := body.ReadFrom(http.MaxBytesReader(w, r.Body, maxRequestBody)); err != nil {
		h.fail(w, r, fmt.Errorf("read request: %v: %w", err, ErrInvalid))
		return
	}
	writes, err := parse(body.Bytes())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	arrived = true
	h.store.arriving.Add(-1)
	ctx, err := epochContext(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	results, err := run(WithCaller(ctx, r.RemoteAddr), writes)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := getBuf()
	defer putBuf(out)
	out.Write(appendResults(out.AvailableBuffer(), results))
	writeBinary(w, out.Bytes())
}

func (h *handler) scan(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit, err := strconv.Atoi(q.Get("limit"))
	if err != nil {
		h.fail(w, r, fmt.Errorf("limit %q: %w", q.Get("limit"), ErrInvalid))
		return
	}
	opts := ScanOptions{Prefix: []byte(q.Get("prefix")), Limit: limit, Tombstones: q.Get("tombstones") == "1", KeysOnly: q.Get("keys_only") == "1"}
	if s := q.Get("value_limit"); s != "" {
		if opts.ValueLimit, err = strconv.Atoi(s); err != nil || opts.ValueLimit < 0 {
			h.fail(w, r, fmt.Errorf("value_limit %q: %w", s, ErrInvalid))
			return
		}
	}
	if q.Has("after") {
		opts.After = []byte(q.Get("after"))
	}
	page, err := h.store.Scan(r.Context(), r.PathValue("bucket"), opts)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	buf := getBuf()
	defer putBuf(buf)
	buf.Write(appendScanPage(buf.AvailableBuffer(), &page))
	writeBinary(w, buf.Bytes())
}

func (h *handler) deletePrefix(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	version, err := strconv.ParseUint(q.Get("version"), 10, 64)
	if err != nil {
		h.fail(w, r, fmt.Errorf("version %q: %w", q.Get("version"), ErrInvalid))
		return
	}
	ctx, err := epochContext(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	n, err := h.store.DeletePrefix(ctx, r.PathValue("bucket"), []byte(q.Get("prefix")), version)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"deleted":%d}`, n)
}

// multiGet reads keys sent as a body of length-prefixed keys and answers
// with their records (version 0 for a key never written).
func (h *handler) multiGet(w http.ResponseWriter, r *http.Request) {
	body := getBuf()
	defer putBuf(body)
	if _, err := body.ReadFrom(http.MaxBytesReader(w, r.Body, maxRequestBody)); err != nil {
		h.fail(w, r, fmt.Errorf("read request: %v: %w", err, ErrInvalid))
		return
	}
	keys, err := parseKeys(body.Bytes())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	recs, err := h.store.MultiGet(r.Context(), r.PathValue("bucket"), keys)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := getBuf()
	defer putBuf(out)
	p := ScanPage{Records: recs}
	out.Write(appendScanPage(out.AvailableBuffer(), &p))
	writeBinary(w, out.Bytes())
}

// purge removes the records sent (key and version, as scan records).
func (h *handler) purge(w http.ResponseWriter, r *http.Request) {
	body := getBuf()
	defer putBuf(body)
	if _, err := body.ReadFrom(http.MaxBytesReader(w, r.Body, maxRequestBody)); err != nil {
		h.fail(w, r, fmt.Errorf("read request: %v: %w", err, ErrInvalid))
		return
	}
	page, err := parseScanPage(body.Bytes())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	n, err := h.store.Purge(r.Context(), r.PathValue("bucket"), page.Records)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"purged":%d}`, n)
}

// epochContext carries the epoch a write was sent under, if any.
func epochContext(r *http.Request) (context.Context, error) {
	e := r.Header.Get(headerEpoch)
	if e == "" {
		return r.Context(), nil
	}
	epoch, err := strconv.ParseUint(e, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("%s %q: %w", headerEpoch, e, ErrInvalid)
	}
	return WithEpoch(r.Context(), epoch), nil
}

func writeBinary(w http.ResponseWriter, b []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.Write(b)
}

// errorStatus is the one table from error to status and code.
var errorStatus = []struct {
	err    error
	status int
	code   string
}{
	{ErrNotFound, http.StatusNotFound, "not_found"},
	{ErrInvalid, http.StatusBadRequest, "invalid_argument"},
	{ErrClosed, http.StatusServiceUnavailable, "unavailable"},
	{ErrStaleEpoch, http.StatusConflict, "stale_epoch"},
	{ErrChangesGap, http.StatusGone, "changes_gap"},
}

func (h *handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	status, code := http.StatusInternalServerError, "internal"
	for _, e := range errorStatus {
		if errors.Is(err, e.err) {
			status, code = e.status, e.code
			break
		}
	}
	if status >= 500 {
		h.log.Error("storage request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	writeError(w, status, code, err.Error())
}

type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	var body errorBody
	body.Error.Code, body.Error.Message = code, msg
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(body)
}
