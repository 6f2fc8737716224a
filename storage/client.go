package storage

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// NewTransport returns an HTTP transport tuned for the router-to-shard hop:
// keep-alive connections pooled generously per shard, so a burst of
// concurrent requests does not open and close sockets.
func NewTransport() *http.Transport {
	return &http.Transport{
		Proxy:                 nil, // shards are never reached through a proxy
		DialContext:           (&net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          4096,
		MaxIdleConnsPerHost:   512,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		DisableCompression:    true, // values are compressed by the router already
	}
}

// Client reaches one storage daemon. It is safe for concurrent use; make one
// per shard and share it.
type Client struct {
	name string
	base string // "http://host:port"
	hc   *http.Client
	// stream is hc without its timeout, for change streams that last as
	// long as their follower; it shares hc's transport and its pool.
	stream *http.Client

	// InFlight is how many Get requests, and how many Apply requests, go
	// to the shard at once before further calls wait and leave together
	// in one request (batch.go). Zero or less sends every call on its own.
	// Set it before first use.
	InFlight int
	gets     batcher[[]byte, Record]
	applies  batcher[[]Write, []Result]
	onBatch  atomic.Pointer[func(op string, calls int)]
}

// NewClient returns a client for the shard called name at addr
// ("host:port" or a URL). hc carries the shared transport; nil means a
// client with NewTransport.
func NewClient(name, addr string, hc *http.Client) *Client {
	if hc == nil {
		hc = &http.Client{Transport: NewTransport()}
	}
	base := addr
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	stream := *hc
	stream.Timeout = 0
	return &Client{name: name, base: strings.TrimRight(base, "/"), hc: hc, stream: &stream, InFlight: DefaultInFlight}
}

// Name is the shard's name in the cluster configuration.
func (c *Client) Name() string { return c.name }

// Addr is the base URL the client talks to.
func (c *Client) Addr() string { return c.base }

// Scan returns a page of records in key order.
func (c *Client) Scan(ctx context.Context, bucket string, opts ScanOptions) (ScanPage, error) {
	if err := c.checkBucket(bucket); err != nil {
		return ScanPage{}, err
	}
	q := url.Values{}
	q.Set("prefix", string(opts.Prefix))
	q.Set("limit", strconv.Itoa(opts.Limit))
	if opts.After != nil {
		q.Set("after", string(opts.After))
	}
	if opts.Tombstones {
		q.Set("tombstones", "1")
	}
	if opts.KeysOnly {
		q.Set("keys_only", "1")
	}
	if opts.ValueLimit > 0 {
		q.Set("value_limit", strconv.Itoa(opts.ValueLimit))
	}
	body, err := c.do(ctx, http.MethodGet, pathScan+bucket+"?"+q.Encode(), nil)
	if err != nil {
		return ScanPage{}, err
	}
	page, err := parseScanPage(body)
	if err != nil {
		return ScanPage{}, fmt.Errorf("shard %s: %v: %w", c.name, err, ErrInternal)
	}
	return page, nil
}

// DeletePrefix tombstones every live record under prefix older than version.
func (c *Client) DeletePrefix(ctx context.Context, bucket string, prefix []byte, version uint64) (int, error) {
	if err := c.checkBucket(bucket); err != nil {
		return 0, err
	}
	q := url.Values{}
	q.Set("prefix", string(prefix))
	q.Set("version", strconv.FormatUint(version, 10))
	body, err := c.do(ctx, http.MethodPost, pathDeletePrefix+bucket+"?"+q.Encode(), nil)
	if err != nil {
		return 0, err
	}
	var out struct {
		Deleted int `json:"deleted"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		return 0, fmt.Errorf("shard %s: delete-prefix answer: %v: %w", c.name, err, ErrInternal)
	}
	return out.Deleted, nil
}

// Reindex asks the shard to rebuild its vector indexes (see Store.Reindex).
func (c *Client) Reindex(ctx context.Context) error {
	_, err := c.do(ctx, http.MethodPost, pathReindex, nil)
	return err
}

// TopK asks the shard for the q.K vectors under q.Prefix most similar to
// q.Query (see Store.TopK).
func (c *Client) TopK(ctx context.Context, bucket string, q TopKQuery) (TopKResult, error) {
	if err := c.checkBucket(bucket); err != nil {
		return TopKResult{}, err
	}
	if err := checkTopK(&q); err != nil {
		return TopKResult{}, fmt.Errorf("shard %s: %w", c.name, err)
	}
	body, err := c.do(ctx, http.MethodPost, pathTopK+bucket, appendTopKQuery(nil, &q))
	if err != nil {
		return TopKResult{}, err
	}
	res, err := parseTopKResult(body)
	if err != nil {
		return TopKResult{}, fmt.Errorf("shard %s: %v: %w", c.name, err, ErrInternal)
	}
	return res, nil
}

// checkBucket refuses a bucket name before it is pasted into a URL path: a
// name with '/', '?' or '%' would reach another route or another bucket, and
// an empty one no route at all (ErrNotFound instead of ErrInvalid).
func (c *Client) checkBucket(bucket string) error {
	if err := checkBucket(bucket); err != nil {
		return fmt.Errorf("shard %s: %w", c.name, err)
	}
	return nil
}

// Info returns the shard's identity and size.
func (c *Client) Info(ctx context.Context) (Info, error) {
	body, err := c.do(ctx, http.MethodGet, pathInfo, nil)
	if err != nil {
		return Info{}, err
	}
	var info Info
	if err := json.Unmarshal(body, &info); err != nil {
		return Info{}, fmt.Errorf("shard %s: info answer: %v: %w", c.name, err, ErrInternal)
	}
	return info, nil
}

// Ping checks that the daemon answers its health endpoint.
func (c *Client) Ping(ctx context.Context) error {
	_, err := c.do(ctx, http.MethodGet, pathHealth, nil)
	return err
}

// MultiGet returns the records held for keys, in order (Version 0: never
// written).
func (c *Client) MultiGet(ctx context.Context, bucket string, keys [][]byte) ([]Record, error) {
	if err := c.checkBucket(bucket); err != nil {
		return nil, err
	}
	buf := getBuf()
	defer putBuf(buf)
	buf.Write(appendKeys(buf.AvailableBuffer(), keys))
	body, err := c.do(ctx, http.MethodPost, pathMultiGet+bucket, buf.Bytes())
	if err != nil {
		return nil, err
	}
	page, err := parseScanPage(body)
	if err == nil && len(page.Records) != len(keys) {
		err = fmt.Errorf("%d records for %d keys", len(page.Records), len(keys))
	}
	if err != nil {
		return nil, fmt.Errorf("shard %s: %v: %w", c.name, err, ErrInternal)
	}
	return page.Records, nil
}

// Purge removes each record whose held version is at most the one given.
func (c *Client) Purge(ctx context.Context, bucket string, recs []Record) (int, error) {
	if err := c.checkBucket(bucket); err != nil {
		return 0, err
	}
	keys := make([]Record, len(recs))
	for i, r := range recs {
		keys[i] = Record{Key: r.Key, Version: r.Version}
	}
	buf := getBuf()
	defer putBuf(buf)
	buf.Write(appendScanPage(buf.AvailableBuffer(), &ScanPage{Records: keys}))
	body, err := c.do(ctx, http.MethodPost, pathPurge+bucket, buf.Bytes())
	if err != nil {
		return 0, err
	}
	var out struct {
		Purged int `json:"purged"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		return 0, fmt.Errorf("shard %s: purge answer: %v: %w", c.name, err, ErrInternal)
	}
	return out.Purged, nil
}

// Health returns the daemon's identity and the cluster-map epoch it holds.
func (c *Client) Health(ctx context.Context) (Health, error) {
	body, err := c.do(ctx, http.MethodGet, pathHealth, nil)
	if err != nil {
		return Health{}, err
	}
	var h Health
	if err := json.Unmarshal(body, &h); err != nil {
		return Health{}, fmt.Errorf("shard %s: health answer: %v: %w", c.name, err, ErrInternal)
	}
	return h, nil
}

// do sends one request and returns the body of a 200 answer. Any other
// answer becomes a sentinel error named after the shard.
func (c *Client) do(ctx context.Context, method, path string, body []byte) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, fmt.Errorf("shard %s: %v: %w", c.name, err, ErrInvalid)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	if e, ok := EpochFrom(ctx); ok {
		req.Header.Set(headerEpoch, strconv.FormatUint(e, 10))
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("shard %s (%s): %v: %w", c.name, c.base, err, ErrUnavailable)
	}
	defer resp.Body.Close()
	out, err := readBody(resp)
	if err != nil {
		return nil, fmt.Errorf("shard %s (%s): read answer: %v: %w", c.name, c.base, err, ErrUnavailable)
	}
	if resp.StatusCode == http.StatusOK {
		return out, nil
	}
	return nil, c.answerError(resp.StatusCode, out)
}

// answerError is the sentinel error, named after the shard, for an answer
// of status with body other than 200.
func (c *Client) answerError(status int, out []byte) error {
	var eb errorBody
	msg := strings.TrimSpace(string(out))
	if json.Unmarshal(out, &eb) == nil && eb.Error.Message != "" {
		msg = eb.Error.Message
	}
	sentinel := ErrInternal
	switch status {
	case http.StatusUnauthorized:
		sentinel = ErrUnauthenticated
	case http.StatusNotFound:
		sentinel = ErrNotFound
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
		sentinel = ErrInvalid
	case http.StatusServiceUnavailable, http.StatusBadGateway, http.StatusGatewayTimeout:
		sentinel = ErrUnavailable
	case http.StatusConflict:
		if eb.Error.Code == "stale_epoch" {
			sentinel = ErrStaleEpoch
		}
	}
	return fmt.Errorf("shard %s: %s: %w", c.name, msg, sentinel)
}

func queryEscape(key []byte) string { return url.QueryEscape(string(key)) }

// readBody reads a whole answer with one allocation when its length is known.
func readBody(resp *http.Response) ([]byte, error) {
	if n := resp.ContentLength; n >= 0 && n <= maxRequestBody {
		b := make([]byte, n)
		_, err := io.ReadFull(resp.Body, b)
		return b, err
	}
	return io.ReadAll(io.LimitReader(resp.Body, maxRequestBody))
}
