package placement

import (
	"context"
	"errors"
	"time"

	"github.com/go-kvdb/go-kvdb/storage"
)

// ErrStop, returned by a Walk visitor, ends the walk without an error.
var ErrStop = errors.New("stop the walk")

// Walk reads bucket on sh in key order, one page of opts.Limit records at
// a time from opts.After on, and hands each page to visit until the range
// ends or visit returns an error (ErrStop ends it quietly). Each page is
// read under its own deadline of timeout (0: the caller's only), so a
// long walk never runs out of one deadline. It is the one "scan until the
// shard has no more" loop of the router.
func Walk(ctx context.Context, sh Shard, bucket string, opts storage.ScanOptions, timeout time.Duration, visit func([]storage.Record) error) error {
	for {
		sctx, cancel := ctx, context.CancelFunc(func() {})
		if timeout > 0 {
			sctx, cancel = context.WithTimeout(ctx, timeout)
		}
		p, err := sh.Scan(sctx, bucket, opts)
		cancel()
		if err != nil {
			return err
		}
		if err := visit(p.Records); err != nil {
			if errors.Is(err, ErrStop) {
				return nil
			}
			return err
		}
		if !p.More || len(p.Records) == 0 {
			return nil
		}
		opts.After = p.Records[len(p.Records)-1].Key
	}
}
