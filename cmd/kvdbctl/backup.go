package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	"github.com/go-kvdb/go-kvdb/backup"
	"github.com/go-kvdb/go-kvdb/client"
	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// progress is a progress bar on stderr when stderr is a terminal, and
// nothing otherwise (a pipe, a file, a test's buffer).
type progress struct{ bar *progressbar.ProgressBar }

// newProgress starts a bar of max units (bytes when isBytes; max < 0:
// unknown), or a silent one when stderr is not a terminal.
func (x *cli) newProgress(max int64, description string, isBytes bool) *progress {
	f, ok := x.stderr.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return &progress{}
	}
	opts := []progressbar.Option{
		progressbar.OptionSetWriter(f),
		progressbar.OptionSetDescription(description),
		progressbar.OptionThrottle(100 * time.Millisecond),
		progressbar.OptionShowElapsedTimeOnFinish(),
		progressbar.OptionSetWidth(30),
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(f) }),
	}
	if isBytes {
		opts = append(opts, progressbar.OptionShowBytes(true))
	} else {
		opts = append(opts, progressbar.OptionShowCount(), progressbar.OptionSetItsString("records"), progressbar.OptionShowIts())
	}
	return &progress{bar: progressbar.NewOptions64(max, opts...)}
}

func (p *progress) set(n int64) {
	if p.bar != nil {
		p.bar.Set64(n)
	}
}

func (p *progress) done() {
	if p.bar != nil {
		p.bar.Finish()
	}
}

// countReader counts the bytes read through it, for a progress bar.
type countReader struct {
	r  io.ReadSeeker
	n  int64
	fn func(int64)
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	c.fn(c.n)
	return n, err
}

func (c *countReader) Seek(off int64, whence int) (int64, error) {
	n, err := c.r.Seek(off, whence)
	c.n = n
	return n, err
}

// ---- backup ----

func (x *cli) backup(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("backup", flag.ContinueOnError)
	x.globals(fs, false)
	out := fs.String("o", "", "the archive to write (required); it appears only once complete")
	asJSON := fs.Bool("json", false, "print the manifest as JSON")
	if _, err := x.parse(fs, args, 0, 0, "-o FILE"); err != nil {
		return err
	}
	if *out == "" {
		return usagef("backup: -o FILE is required")
	}
	if *asJSON {
		x.format = "json"
	}
	// Written beside the target, renamed when complete: a failed backup
	// never leaves something that looks like an archive.
	tmp, err := os.CreateTemp(filepath.Dir(*out), "."+filepath.Base(*out)+".tmp-*")
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	bar := x.newProgress(-1, "backup", true)
	m, err := x.c.Backup(ctx, tmp, bar.set)
	bar.done()
	if err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	if err := os.Rename(tmp.Name(), *out); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	size := int64(0)
	if st, err := os.Stat(*out); err == nil {
		size = st.Size()
	}
	return x.out(m, func() error {
		fmt.Fprintf(x.stdout, "backup written to %s (%s compressed)\n\n", *out, bytesOf(size))
		return x.manifest(m)
	})
}

// manifest prints an archive's manifest for people.
func (x *cli) manifest(m *backup.Manifest) error {
	cl := m.Cluster
	if err := x.fields("format", strconv.Itoa(m.Format), "taken", when(cl.CreatedAt), "cluster",
		fmt.Sprintf("%s, epoch %d, %s, %d shards, replicas %d", cl.Mode, cl.Epoch, cl.State, len(cl.Shards), cl.Replicas),
		"records", fmt.Sprintf("%d (%d tombstones)", m.Records, m.Tombstones), "sha256", m.SHA256); err != nil {
		return err
	}
	fmt.Fprintln(x.stdout)
	rows := make([][]string, len(m.Sections))
	for i, s := range m.Sections {
		rows[i] = []string{s.Shard, strconv.FormatInt(s.Records, 10), strconv.FormatInt(s.Tombstones, 10), bytesOf(s.Bytes), bucketCounts(s.Buckets), s.SHA256[:16] + "…"}
	}
	return x.table([]string{"SHARD", "RECORDS", "TOMBSTONES", "SIZE", "BUCKETS", "SHA256"}, rows)
}

func bucketCounts(m map[string]int64) string {
	names := make([]string, 0, len(m))
	for b := range m {
		names = append(names, b)
	}
	sort.Strings(names)
	s := ""
	for i, b := range names {
		if i > 0 {
			s += " "
		}
		s += fmt.Sprintf("%s=%d", b, m[b])
	}
	return dash(s)
}

// ---- restore and verify ----

func (x *cli) restore(ctx context.Context, args []string) error {
	fs := x.newFlags("restore")
	dry := fs.Bool("dry-run", false, "report what would change, write nothing")
	pos, err := x.parse(fs, args, 1, 1, "FILE [-dry-run]")
	if err != nil {
		return err
	}
	f, size, err := openArchive(pos[0])
	if err != nil {
		return err
	}
	defer f.Close()
	verifyBar := x.newProgress(size, "verify ", true)
	var bar *progress
	opts := client.RestoreOptions{
		DryRun: *dry,
		Verified: func(m *backup.Manifest) {
			verifyBar.done()
			desc := "restore"
			if *dry {
				desc = "dry run"
			}
			bar = x.newProgress(m.Records, desc, false)
		},
		Progress: func(n int64) { bar.set(n) },
	}
	cr := &countReader{r: f, fn: verifyBar.set}
	rep, err := x.c.Restore(ctx, cr, opts)
	if bar != nil {
		bar.done()
	}
	if err != nil {
		return fmt.Errorf("%s: %w", pos[0], err)
	}
	return x.out(rep, func() error {
		applied := "APPLIED"
		if rep.DryRun {
			applied = "WOULD APPLY"
		}
		names := make([]string, 0, len(rep.Buckets))
		for b := range rep.Buckets {
			names = append(names, b)
		}
		sort.Strings(names)
		rows := make([][]string, 0, len(names)+1)
		for _, b := range names {
			c := rep.Buckets[b]
			rows = append(rows, []string{b, strconv.FormatInt(c.Records, 10), strconv.FormatInt(c.Applied, 10), strconv.FormatInt(c.Skipped, 10)})
		}
		rows = append(rows, []string{"total", strconv.FormatInt(rep.Records, 10), strconv.FormatInt(rep.Applied, 10), strconv.FormatInt(rep.Skipped, 10)})
		if err := x.table([]string{"BUCKET", "RECORDS", applied, "SKIPPED (SAME OR NEWER HELD)"}, rows); err != nil {
			return err
		}
		if rep.DryRun {
			fmt.Fprintln(x.stdout, "\ndry run: nothing was written")
		}
		return nil
	})
}

func (x *cli) verify(ctx context.Context, args []string) error {
	x.offline = true
	pos, err := x.parse(x.newFlags("verify"), args, 1, 1, "FILE")
	if err != nil {
		return err
	}
	f, size, err := openArchive(pos[0])
	if err != nil {
		return err
	}
	defer f.Close()
	bar := x.newProgress(size, "verify", true)
	m, err := backup.Verify(&countReader{r: f, fn: bar.set})
	bar.done()
	if err != nil {
		return fmt.Errorf("%s: %w", pos[0], err)
	}
	return x.out(m, func() error {
		fmt.Fprintf(x.stdout, "%s: ok, every checksum matches\n\n", pos[0])
		return x.manifest(m)
	})
}

func openArchive(path string) (*os.File, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, st.Size(), nil
}

func derefTime(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return *t
}
