package llm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/go-kvdb/go-kvdb/router/apierr"
	"github.com/go-kvdb/go-kvdb/router/codec"
	"github.com/go-kvdb/go-kvdb/router/coord"
	"github.com/go-kvdb/go-kvdb/router/schema"
	"github.com/go-kvdb/go-kvdb/storage"
	"github.com/go-kvdb/go-kvdb/storage/kwindex"
	"golang.org/x/sync/errgroup"
)

// ---- message vectors ----

// maxMessageEmbedText bounds what of one message is embedded.
const maxMessageEmbedText = 8 << 10

// MessageVectors embeds the messages an append adds, in one call to the
// embedding model, for message search (docstore.Hooks): the vector record
// of each, tagged with its role. Without an embedding model, or when the
// model fails, it embeds nothing (logged): the messages are stored all
// the same, only not found by message search.
func (l *Service) MessageVectors(ctx context.Context, msgs []schema.Message) [][]byte {
	model := l.cfg.EmbedModel
	if model == "" || l.cfg.Client == nil || len(msgs) == 0 {
		return nil
	}
	var texts []string
	var which []int
	for i, m := range msgs {
		text := strings.TrimSpace(m.Content)
		if text == "" {
			continue
		}
		if len(text) > maxMessageEmbedText {
			text = text[:maxMessageEmbedText]
		}
		texts = append(texts, strings.ToValidUTF8(text, ""))
		which = append(which, i)
	}
	if len(texts) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, l.cfg.EmbedTimeout)
	defer cancel()
	vecs, err := l.embed(ctx, "embed_messages", model, texts)
	if err == nil && len(vecs) != len(texts) {
		err = fmt.Errorf("embed with %s: %d vectors for %d messages", model, len(vecs), len(texts))
	}
	if err != nil {
		l.log.Warn("messages stored without their embeddings: message search will not find them", "model", model, "messages", len(texts), "err", err)
		return nil
	}
	out := make([][]byte, len(msgs))
	for j, i := range which {
		if len(vecs[j]) == 0 || len(vecs[j]) > schema.MaxEmbeddings {
			continue
		}
		out[i] = storage.EncodeVector(storage.Vector{Model: model, Tags: []string{msgs[i].Role}, Values: vecs[j]})
	}
	return out
}

// ---- message search ----

// messageResult is one result of a message-scope search (its score and
// legs follow, as for contexts).
type messageResult struct {
	ID      string         `json:"id"` // the context whose conversation holds it
	Seq     uint64         `json:"seq"`
	Message schema.Message `json:"message"`
}

// matchedMessage is a message a vector match names, as read back.
type matchedMessage struct {
	id      string
	seq     uint64
	version uint64 // the message record's
	msg     schema.Message
	ok      bool // live, at the match's version, and part of its conversation
}

// readMatchedMessages reads the message and the conversation header of
// each match, in parallel: a match is ok when its message record is the
// one its vector was made from (same version) and the conversation still
// holds that seq.
func (l *Service) readMatchedMessages(ctx context.Context, topic string, matches []storage.Match) ([]matchedMessage, error) {
	out := make([]matchedMessage, len(matches))
	prefix := []byte(topic + schema.KeySep)
	g, gctx := errgroup.WithContext(ctx)
	for i, m := range matches {
		g.Go(func() error {
			id, seq, ok := splitMessageKey(prefix, m.Key)
			if !ok {
				return nil
			}
			pk := schema.Placement(topic, id)
			rec, err := l.coord.Get(gctx, pk, schema.BucketMessages, m.Key)
			if errors.Is(err, storage.ErrNotFound) || (err == nil && (rec.Tombstone || rec.Version != m.Version)) {
				return nil
			}
			if err != nil {
				return err
			}
			head, err := l.coord.Get(gctx, pk, schema.BucketContexts, []byte(schema.ContextKey(topic, id)))
			if errors.Is(err, storage.ErrNotFound) {
				return nil
			}
			if err != nil {
				return err
			}
			if !codec.LiveRecord(head, time.Now()) {
				return nil
			}
			conv, err := l.codec.ConversationOf(head.Value)
			if err != nil || conv == nil || seq > conv.Last {
				return nil // replaced since (by a PUT: inline again, or shorter)
			}
			msg, err := l.codec.DecodeMessage(rec.Value)
			if err != nil {
				return &apierr.Error{Code: apierr.CodeInternal, Message: fmt.Sprintf("message %d of context %q cannot be decoded", seq, id), Err: err}
			}
			msg.Seq = seq
			out[i] = matchedMessage{id: id, seq: seq, version: rec.Version, msg: msg, ok: true}
			return nil
		})
	}
	return out, g.Wait()
}

// splitMessageKey is the context id and seq of a message key of the topic
// whose key prefix is prefix (topic, 0).
func splitMessageKey(prefix, key []byte) (id string, seq uint64, ok bool) {
	if len(key) < len(prefix)+10 || string(key[:len(prefix)]) != string(prefix) {
		return "", 0, false
	}
	n := len(key) - 9
	if key[n] != schema.KeySep[0] {
		return "", 0, false
	}
	id = string(key[len(prefix):n])
	seq, ok = schema.MessageSeq(key[:n+1], key)
	return id, seq, ok && schema.ValidID(id)
}

// searchMessages answers a search of scope "messages": the k messages of
// the topic (of one conversation with req.Context) that rank best, by
// their vectors, their words (BM25 over the messages, with the topic's
// statistics) or both fused by reciprocal rank, as for contexts.
func (l *Service) searchMessages(ctx context.Context, topic string, req SearchRequest, mode string) ([]byte, error) {
	hits, byKey, found, dim, err := l.messageHits(ctx, topic, req, mode)
	if err != nil {
		return nil, err
	}
	if len(hits) == 0 && found.OtherDim > 0 {
		return nil, apierr.Errorf(apierr.CodeInvalidArgument, "the query has %d dimensions but the %d messages embedded by model %q in topic %q have another: vectors of different dimensions are never compared", dim, found.OtherDim, l.vectorModel(&req), topic)
	}
	out := append(make([]byte, 0, 256*req.K+48), `{"results":[`...)
	for i, h := range hits[:min(len(hits), req.K)] {
		r := byKey[string(h.key)]
		body, err := json.Marshal(messageResult{ID: r.id, Seq: r.seq, Message: r.msg})
		if err != nil {
			return nil, err
		}
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, body[:len(body)-1]...)
		out = appendScoreAndLegs(out, h)
		out = append(out, '}')
	}
	out = append(out, `],"exact":`...)
	out = strconv.AppendBool(out, mode == ModeKeyword || found.Exact)
	out = append(out, `,"mode":"`+mode+`"}`...)
	return out, nil
}

// messageHits runs the legs of a message search and fuses them: the hits,
// best first, and the live messages they name, by key.
func (l *Service) messageHits(ctx context.Context, topic string, req SearchRequest, mode string) ([]hit, map[string]matchedMessage, storage.TopKResult, int, error) {
	prefix := []byte(topic + schema.KeySep)
	if req.Context != "" {
		prefix = schema.MessagePrefix(topic, req.Context)
	}
	var legs [2][]storage.Match
	var found storage.TopKResult
	var dim int
	g, gctx := errgroup.WithContext(ctx)
	if mode != ModeKeyword {
		g.Go(func() error {
			var err error
			found, dim, err = l.vectorLegIn(gctx, schema.BucketMessageVectors, prefix, &req)
			legs[0] = found.Matches
			return err
		})
	}
	if mode != ModeVector {
		g.Go(func() error {
			terms := kwindex.QueryTerms(req.Query)
			if len(terms) == 0 {
				return nil
			}
			terms = terms[:min(len(terms), storage.MaxQueryTerms)]
			// The shards keep keyword statistics by topic: one conversation's
			// messages are the topic's best, filtered.
			k := req.K + searchSlack
			if req.Context != "" {
				k = storage.MaxTopK
			}
			res, err := l.coord.Keyword(gctx, coord.KeywordQuery{Bucket: schema.BucketMessageText, Prefix: []byte(topic + schema.KeySep), Terms: terms, K: k, Tags: req.Tags})
			for _, m := range res.Matches {
				if bytes.HasPrefix(m.Key, prefix) && len(legs[1]) < req.K+searchSlack {
					legs[1] = append(legs[1], m)
				}
			}
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, nil, found, dim, err
	}
	// Every message either leg found, read once.
	var union []storage.Match
	seen := map[string]bool{}
	for _, ms := range legs {
		for _, m := range ms {
			if !seen[string(m.Key)] {
				seen[string(m.Key)] = true
				union = append(union, m)
			}
		}
	}
	read, err := l.readMatchedMessages(ctx, topic, union)
	if err != nil {
		return nil, nil, found, dim, err
	}
	byKey := make(map[string]matchedMessage, len(union))
	for i, m := range union {
		if read[i].ok {
			byKey[string(m.Key)] = read[i]
		}
	}
	hits := fuseHits(legs, func(_ int, m storage.Match) bool {
		r, ok := byKey[string(m.Key)]
		return ok && r.version == m.Version
	})
	return hits, byKey, found, dim, nil
}
