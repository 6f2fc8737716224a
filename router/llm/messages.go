package llm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/go-kvdb/go-kvdb/router/apierr"
	"github.com/go-kvdb/go-kvdb/router/codec"
	"github.com/go-kvdb/go-kvdb/router/schema"
	"github.com/go-kvdb/go-kvdb/storage"
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

// messageResult is one result of a message-scope search.
type messageResult struct {
	ID      string         `json:"id"` // the context whose conversation holds it
	Seq     uint64         `json:"seq"`
	Message schema.Message `json:"message"`
	Score   float64        `json:"score"`
}

// matchedMessage is a message a vector match names, as read back.
type matchedMessage struct {
	id  string
	seq uint64
	msg schema.Message
	ok  bool // live, at the vector's version, and part of its conversation
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
			out[i] = matchedMessage{id: id, seq: seq, msg: msg, ok: true}
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
// the topic (of one conversation when id is set) whose vectors are most
// similar to query, best first.
func (l *Service) searchMessages(ctx context.Context, topic, id string, query []float32, model string, req SearchRequest) ([]byte, error) {
	prefix := []byte(topic + schema.KeySep)
	if id != "" {
		prefix = schema.MessagePrefix(topic, id)
	}
	found, err := l.coord.TopKIn(ctx, schema.BucketMessageVectors, storage.TopKQuery{Prefix: prefix, Query: query, K: req.K + searchSlack, Model: model, Tags: req.Tags, Exact: req.Exact})
	if err != nil {
		return nil, err
	}
	read, err := l.readMatchedMessages(ctx, topic, found.Matches)
	if err != nil {
		return nil, err
	}
	results := make([]messageResult, 0, req.K)
	for i, m := range read {
		if !m.ok {
			continue
		}
		results = append(results, messageResult{ID: m.id, Seq: m.seq, Message: m.msg, Score: found.Matches[i].Score})
		if len(results) == req.K {
			break
		}
	}
	if len(results) == 0 && found.OtherDim > 0 {
		return nil, apierr.Errorf(apierr.CodeInvalidArgument, "the query has %d dimensions but the %d messages embedded by model %q in topic %q have another: vectors of different dimensions are never compared", len(query), found.OtherDim, model, topic)
	}
	body, err := json.Marshal(results)
	if err != nil {
		return nil, err
	}
	out := append(make([]byte, 0, len(body)+48), `{"results":`...)
	out = append(out, body...)
	out = append(out, `,"exact":`...)
	out = strconv.AppendBool(out, found.Exact)
	return append(out, '}'), nil
}
