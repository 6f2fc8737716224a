package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/go-kvdb/go-kvdb/client"
)

// stringList is a repeatable flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func (x *cli) newFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	x.globals(fs, true)
	return fs
}

// ---- topics ----

func (x *cli) topicRows(ts ...client.Topic) error {
	rows := make([][]string, len(ts))
	for i, t := range ts {
		mt := "-"
		if t.MaxTokens > 0 {
			mt = strconv.Itoa(t.MaxTokens)
		}
		rows[i] = []string{t.Name, dash(t.Description), mt, seconds(t.DefaultTTLSeconds), when(t.CreatedAt)}
	}
	return x.table([]string{"NAME", "DESCRIPTION", "MAX TOKENS", "DEFAULT TTL", "CREATED"}, rows)
}

func (x *cli) topicsCreate(ctx context.Context, args []string) error {
	fs := x.newFlags("topics create")
	desc := fs.String("description", "", "what the topic holds")
	maxTokens := fs.Int("max-tokens", 0, "token budget of the topic's conversations")
	ttl := fs.Int64("default-ttl", 0, "seconds a context lives when written without an expiry of its own (0: forever)")
	pos, err := x.parse(fs, args, 1, 1, "NAME")
	if err != nil {
		return err
	}
	t, err := x.c.CreateTopic(ctx, client.Topic{Name: pos[0], Description: *desc, MaxTokens: *maxTokens, DefaultTTLSeconds: *ttl})
	if err != nil {
		return err
	}
	return x.out(t, func() error { return x.topicRows(*t) })
}

func (x *cli) topicsGet(ctx context.Context, args []string) error {
	pos, err := x.parse(x.newFlags("topics get"), args, 1, 1, "NAME")
	if err != nil {
		return err
	}
	t, err := x.c.Topic(ctx, pos[0])
	if err != nil {
		return err
	}
	return x.out(t, func() error { return x.topicRows(*t) })
}

func (x *cli) topicsList(ctx context.Context, args []string) error {
	fs := x.newFlags("topics list")
	prefix := fs.String("prefix", "", "only topics whose names begin with this")
	if _, err := x.parse(fs, args, 0, 0, ""); err != nil {
		return err
	}
	ts := []client.Topic{}
	for t, err := range x.c.Topics(ctx, *prefix) {
		if err != nil {
			return err
		}
		ts = append(ts, t)
	}
	return x.out(ts, func() error { return x.topicRows(ts...) })
}

func (x *cli) topicsDelete(ctx context.Context, args []string) error {
	pos, err := x.parse(x.newFlags("topics delete"), args, 1, 1, "NAME")
	if err != nil {
		return err
	}
	if err := x.c.DeleteTopic(ctx, pos[0]); err != nil {
		return err
	}
	return x.out(map[string]string{"deleted": pos[0]}, func() error {
		_, err := fmt.Fprintf(x.stdout, "deleted topic %s\n", pos[0])
		return err
	})
}

// ---- contexts ----

func (x *cli) contextsPut(ctx context.Context, args []string) error {
	fs := x.newFlags("contexts put")
	file := fs.String("f", "-", "the JSON document: a file, or - for stdin")
	ifMatch := fs.String("if-match", "", "write only over this version (an ETag)")
	ifNone := fs.Bool("if-none-match", false, "create only: fail if the context exists")
	pos, err := x.parse(fs, args, 1, 2, "TOPIC [ID]")
	if err != nil {
		return err
	}
	var in io.Reader = x.stdin
	if *file != "-" {
		f, err := os.Open(*file)
		if err != nil {
			return usagef("-f: %v", err)
		}
		defer f.Close()
		in = f
	}
	raw, err := io.ReadAll(in)
	if err != nil {
		return fmt.Errorf("read the document: %w", err)
	}
	var doc client.Document
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		return usagef("the document is not a context's JSON: %v", err)
	}
	var stored *client.Document
	if len(pos) == 1 {
		if *ifMatch != "" || *ifNone {
			return usagef("-if-match and -if-none-match need an ID")
		}
		stored, err = x.c.CreateContext(ctx, pos[0], doc)
	} else {
		stored, err = x.c.PutContext(ctx, pos[0], pos[1], doc, &client.WriteOptions{IfMatch: *ifMatch, IfNoneMatch: *ifNone})
	}
	if err != nil {
		return err
	}
	return x.out(stored, func() error {
		status := "replaced"
		if stored.Created {
			status = "created"
		}
		return x.table([]string{"TOPIC", "ID", "STATUS", "ETAG", "EXPIRES"},
			[][]string{{pos[0], stored.Metadata.ID, status, stored.ETag, when(stored.Metadata.ExpiresAt)}})
	})
}

func (x *cli) contextsGet(ctx context.Context, args []string) error {
	pos, err := x.parse(x.newFlags("contexts get"), args, 2, 2, "TOPIC ID")
	if err != nil {
		return err
	}
	d, err := x.c.GetContext(ctx, pos[0], pos[1])
	if err != nil {
		return err
	}
	return x.out(d, func() error {
		m := d.Metadata
		emb := "-"
		if n := len(d.Content.Embeddings); n > 0 {
			emb = fmt.Sprintf("%d dimensions (%s)", n, dash(m.EmbeddingModel))
		}
		if err := x.fields("id", m.ID, "etag", d.ETag, "created", when(m.CreatedAt), "updated", when(m.UpdatedAt),
			"expires", when(m.ExpiresAt), "model", dash(m.Model), "tags", dash(strings.Join(m.Tags, ", ")),
			"messages", strconv.Itoa(len(d.Content.Messages)), "embeddings", emb); err != nil {
			return err
		}
		if d.Content.Text != "" {
			fmt.Fprintf(x.stdout, "\n%s\n", d.Content.Text)
		}
		for _, msg := range d.Content.Messages {
			fmt.Fprintf(x.stdout, "\n%s: %s", msg.Role, msg.Content)
		}
		if len(d.Content.Messages) > 0 {
			fmt.Fprintln(x.stdout)
		}
		return nil
	})
}

func (x *cli) contextsList(ctx context.Context, args []string) error {
	fs := x.newFlags("contexts list")
	var tags stringList
	fs.Var(&tags, "tag", "only contexts with this tag (repeatable: all must match)")
	model := fs.String("model", "", "only contexts of this model")
	content := fs.Bool("content", false, "fetch the content too (the text column)")
	limit := fs.Int("limit", 0, "at most this many contexts (0: all)")
	pos, err := x.parse(fs, args, 1, 1, "TOPIC")
	if err != nil {
		return err
	}
	if *limit < 0 {
		return usagef("-limit %d: must not be negative", *limit)
	}
	opts := client.ListOptions{Tags: tags, Model: *model, IncludeContent: *content}
	if *limit > 0 && *limit < 1000 {
		opts.Limit = *limit
	}
	docs := []client.Document{}
	for d, err := range x.c.Contexts(ctx, pos[0], opts) {
		if err != nil {
			return err
		}
		docs = append(docs, d)
		if *limit > 0 && len(docs) == *limit {
			break
		}
	}
	return x.out(docs, func() error {
		header := []string{"ID", "UPDATED", "EXPIRES", "MODEL", "TAGS"}
		if *content {
			header = append(header, "MESSAGES", "TEXT")
		}
		rows := make([][]string, len(docs))
		for i, d := range docs {
			m := d.Metadata
			rows[i] = []string{m.ID, when(m.UpdatedAt), when(m.ExpiresAt), dash(m.Model), dash(strings.Join(m.Tags, ","))}
			if *content {
				rows[i] = append(rows[i], strconv.Itoa(len(d.Content.Messages)), dash(snippet(d.Content.Text, 50)))
			}
		}
		return x.table(header, rows)
	})
}

func (x *cli) contextsDelete(ctx context.Context, args []string) error {
	fs := x.newFlags("contexts delete")
	ifMatch := fs.String("if-match", "", "delete only this version (an ETag)")
	pos, err := x.parse(fs, args, 2, 2, "TOPIC ID")
	if err != nil {
		return err
	}
	if err := x.c.DeleteContext(ctx, pos[0], pos[1], &client.WriteOptions{IfMatch: *ifMatch}); err != nil {
		return err
	}
	return x.out(map[string]string{"deleted": pos[0] + "/" + pos[1]}, func() error {
		_, err := fmt.Fprintf(x.stdout, "deleted context %s/%s\n", pos[0], pos[1])
		return err
	})
}

// ---- search and chat ----

func (x *cli) search(ctx context.Context, args []string) error {
	fs := x.newFlags("search")
	k := fs.Int("k", 10, "how many results (1..100)")
	var tags stringList
	fs.Var(&tags, "tag", "only contexts with this tag (repeatable)")
	model := fs.String("model", "", "the embedding model (default: the router's)")
	mode := fs.String("mode", "", "vector, keyword or hybrid (default: hybrid with an embedding model, keyword without)")
	content := fs.Bool("content", false, "show each result's text")
	pos, err := x.parse(fs, args, 2, -1, "TOPIC QUERY...")
	if err != nil {
		return err
	}
	res, err := x.c.Search(ctx, pos[0], client.SearchRequest{Query: strings.Join(pos[1:], " "), K: *k, Tags: tags, Model: *model, Mode: *mode, IncludeContent: *content})
	if err != nil {
		return err
	}
	if res == nil {
		res = []client.SearchResult{}
	}
	return x.out(res, func() error {
		header := []string{"RANK", "SCORE", "ID", "TAGS"}
		if *content {
			header = append(header, "TEXT")
		}
		rows := make([][]string, len(res))
		for i, r := range res {
			rows[i] = []string{strconv.Itoa(i + 1), fmt.Sprintf("%.4f", r.Score), r.Metadata.ID, dash(strings.Join(r.Metadata.Tags, ","))}
			if *content {
				text := ""
				if r.Content != nil {
					text = r.Content.Text
				}
				rows[i] = append(rows[i], dash(snippet(text, 60)))
			}
		}
		return x.table(header, rows)
	})
}

func (x *cli) chat(ctx context.Context, args []string) error {
	fs := x.newFlags("chat")
	model := fs.String("model", "", "the chat model (default: the router's)")
	maxTokens := fs.Int("max-tokens", 0, "token budget of the conversation (default: the topic's)")
	pos, err := x.parse(fs, args, 3, -1, "TOPIC ID MESSAGE...")
	if err != nil {
		return err
	}
	req := client.ChatRequest{Message: strings.Join(pos[2:], " "), Model: *model, MaxTokens: *maxTokens}
	wrote := false
	for ch, err := range x.c.ChatStream(ctx, pos[0], pos[1], req) {
		if err != nil {
			if wrote && x.format == "table" {
				fmt.Fprintln(x.stdout)
			}
			return err
		}
		if x.format == "json" {
			line, _ := json.Marshal(ch)
			fmt.Fprintf(x.stdout, "%s\n", line)
			continue
		}
		if ch.Done {
			fmt.Fprintln(x.stdout)
			fmt.Fprintf(x.stderr, "(%s: %d prompt and %d answer tokens; %d messages stored)\n", ch.Model, ch.PromptTokens, ch.CompletionTokens, ch.MessagesCount)
			continue
		}
		fmt.Fprint(x.stdout, ch.Message.Content)
		wrote = true
	}
	return nil
}

// ---- cluster ----

func (x *cli) cluster(ctx context.Context, args []string) error {
	if _, err := x.parse(x.newFlags("cluster"), args, 0, 0, ""); err != nil {
		return err
	}
	cl, err := x.c.Cluster(ctx)
	if err != nil {
		return err
	}
	return x.out(cl, func() error {
		if err := x.fields("mode", cl.Mode, "epoch", strconv.FormatUint(cl.Epoch, 10), "state", cl.State, "replicas", strconv.Itoa(cl.Replicas)); err != nil {
			return err
		}
		fmt.Fprintln(x.stdout)
		rows := make([][]string, len(cl.Shards))
		for i, s := range cl.Shards {
			rows[i] = []string{s.Name, s.Address, s.State, strconv.FormatUint(s.Epoch, 10), dash(s.NodeID), dash(s.Error)}
		}
		if err := x.table([]string{"SHARD", "ADDRESS", "STATE", "MAP EPOCH", "NODE ID", "ERROR"}, rows); err != nil {
			return err
		}
		for _, op := range []*client.SyncStatus{cl.Rebalance, cl.Repair} {
			if op == nil {
				continue
			}
			state := "finished " + when(derefTime(op.FinishedAt))
			if op.Running {
				state = "running since " + when(op.StartedAt)
			}
			fmt.Fprintf(x.stdout, "\n%s (%s, phase %s): %d keys scanned, %d copied (%s), %d purged, %d missing, %d errors\n",
				op.Kind, state, op.Phase, op.KeysScanned, op.KeysCopied, bytesOf(op.BytesCopied), op.KeysPurged, op.KeysMissing, op.Errors)
			if op.LastError != "" {
				fmt.Fprintf(x.stdout, "  last error: %s\n", op.LastError)
			}
		}
		return nil
	})
}

// ---- compression ----

func (x *cli) dictionaryFields(d *client.Dictionary) error {
	if d == nil {
		_, err := fmt.Fprintln(x.stdout, "current dictionary: none (plain zstd)")
		return err
	}
	return x.fields("current dictionary", strconv.FormatUint(uint64(d.ID), 10),
		"trained", when(d.TrainedAt),
		"samples", strconv.Itoa(d.Samples),
		"size", bytesOf(int64(d.DictionaryBytes)),
		"ratio", fmt.Sprintf("%.3f without, %.3f with it (stored body bytes / JSON bytes)", d.RatioBefore, d.RatioAfter))
}

func (x *cli) rewriteLine(rw *client.RewriteResult) {
	fmt.Fprintf(x.stdout, "rewrite: %d contexts scanned, %d re-encoded (%s → %s), %d current, %d changed meanwhile, %d failed\n",
		rw.Scanned, rw.Rewritten, bytesOf(rw.BytesBefore), bytesOf(rw.BytesAfter), rw.Current, rw.Changed, rw.Failed)
	for _, e := range rw.Errors {
		fmt.Fprintf(x.stdout, "  error: %s\n", e)
	}
}

func (x *cli) compressionStatus(ctx context.Context, args []string) error {
	if _, err := x.parse(x.newFlags("compression status"), args, 0, 0, ""); err != nil {
		return err
	}
	st, err := x.c.Compression(ctx)
	if err != nil {
		return err
	}
	return x.out(st, func() error {
		if err := x.dictionaryFields(st.Current); err != nil {
			return err
		}
		ids := make([]string, len(st.Dictionaries))
		for i, id := range st.Dictionaries {
			ids[i] = strconv.FormatUint(uint64(id), 10)
		}
		_, err := fmt.Fprintf(x.stdout, "dictionaries held: %s\n", dash(strings.Join(ids, ", ")))
		return err
	})
}

func (x *cli) compressionTrain(ctx context.Context, args []string) error {
	fs := x.newFlags("compression train")
	rewrite := fs.Bool("rewrite", false, "then re-encode the stored contexts with the new dictionary")
	if _, err := x.parse(fs, args, 0, 0, ""); err != nil {
		return err
	}
	res, err := x.c.TrainCompression(ctx, *rewrite)
	if err != nil {
		return err
	}
	return x.out(res, func() error {
		fmt.Fprintf(x.stdout, "dictionary %d (%s) trained on %d stored bodies (%s) and made current\n",
			res.ID, bytesOf(int64(res.DictionaryBytes)), res.Samples-res.Measured, bytesOf(res.SampleBytes))
		fmt.Fprintf(x.stdout, "held-out bodies (%d): %.3f without it, %.3f with it (stored body bytes / JSON bytes)\n",
			res.Measured, res.RatioBefore, res.RatioAfter)
		if res.Rewrite != nil {
			x.rewriteLine(res.Rewrite)
		}
		return nil
	})
}

func (x *cli) compressionRewrite(ctx context.Context, args []string) error {
	fs := x.newFlags("compression rewrite")
	noWait := fs.Bool("no-wait", false, "start the pass in the router and return at once")
	if _, err := x.parse(fs, args, 0, 0, ""); err != nil {
		return err
	}
	res, err := x.c.RewriteCompression(ctx, !*noWait)
	if err != nil {
		return err
	}
	if res == nil {
		return x.out(map[string]string{"status": "started"}, func() error {
			_, err := fmt.Fprintln(x.stdout, "rewrite pass started in the router")
			return err
		})
	}
	return x.out(res, func() error {
		x.rewriteLine(res)
		return nil
	})
}

// watch prints a topic's change feed, one line an event, until -n events
// or an interrupt.
func (x *cli) watch(ctx context.Context, args []string) error {
	fs := x.newFlags("watch")
	since := fs.String("since", "", "resume after this token (a printed event's); default: changes from now on")
	n := fs.Int("n", 0, "stop after this many events (0: run until interrupted)")
	pos, err := x.parse(fs, args, 1, 1, "TOPIC")
	if err != nil {
		return err
	}
	if *n < 0 {
		return usagef("watch: -n %d: must not be negative", *n)
	}
	enc := json.NewEncoder(x.stdout)
	seen := 0
	for ev, err := range x.c.Watch(ctx, pos[0], *since) {
		if err != nil {
			return err
		}
		if x.format == "json" {
			if err := enc.Encode(ev); err != nil {
				return err
			}
		} else {
			fmt.Fprintf(x.stdout, "%-6s  %s  %s  %s  %s\n", strings.ToUpper(ev.Kind), dash(ev.ID), dash(ev.ETag), when(ev.UpdatedAt), ev.Token)
		}
		if seen++; *n > 0 && seen >= *n {
			return nil
		}
	}
	return nil // interrupted
}
