package langchaingo

import (
	"context"
	"errors"
	"fmt"

	"github.com/go-kvdb/go-kvdb/client"
	"github.com/tmc/langchaingo/llms"
	"github.com/tmc/langchaingo/schema"
)

// maxReplaceAttempts bounds the read-modify-write loop of SetMessages and
// Clear: each attempt reads the conversation and writes only over the
// version it read. Another writer in between costs one more attempt.
const maxReplaceAttempts = 16

// History is a langchaingo schema.ChatMessageHistory kept in a Go-KVDB
// conversation: the messages of the context id of a topic. It holds no
// messages itself, so any number of Histories (in any number of processes)
// may share a conversation. It is safe for concurrent use.
type History struct {
	c     *client.Client
	topic string
	id    string
}

var _ schema.ChatMessageHistory = (*History)(nil)

// NewHistory returns the history of the conversation id in topic. Neither
// needs to exist: the first message creates them.
func NewHistory(c *client.Client, topic, id string) (*History, error) {
	if c == nil {
		return nil, fmt.Errorf("new history: %w: nil client", ErrInvalidArgument)
	}
	if err := checkTopic(topic); err != nil {
		return nil, fmt.Errorf("new history: %w", err)
	}
	if err := checkID(id); err != nil {
		return nil, fmt.Errorf("new history: %w", err)
	}
	return &History{c: c, topic: topic, id: id}, nil
}

// Topic is the topic of the conversation.
func (h *History) Topic() string { return h.topic }

// ID is the conversation's context id.
func (h *History) ID() string { return h.id }

// AddMessage appends m to the conversation, creating the topic and the
// conversation when they do not exist. ErrUnsupportedMessage (nothing is
// written) when m cannot be stored whole.
func (h *History) AddMessage(ctx context.Context, m llms.ChatMessage) error {
	msg, err := toAPI(m)
	if err != nil {
		return fmt.Errorf("add message to %s/%s: %w", h.topic, h.id, err)
	}
	return h.append(ctx, msg)
}

// AddUserMessage appends a user (human) message.
func (h *History) AddUserMessage(ctx context.Context, text string) error {
	return h.append(ctx, client.Message{Role: "user", Content: text})
}

// AddAIMessage appends an assistant (AI) message.
func (h *History) AddAIMessage(ctx context.Context, text string) error {
	return h.append(ctx, client.Message{Role: "assistant", Content: text})
}

func (h *History) append(ctx context.Context, msg client.Message) error {
	msgs := []client.Message{msg}
	_, _, err := h.c.AppendMessages(ctx, h.topic, h.id, msgs, "")
	if errors.Is(err, client.ErrNotFound) {
		// An append creates the conversation but not its topic.
		if err = ensureTopic(ctx, h.c, h.topic); err == nil {
			_, _, err = h.c.AppendMessages(ctx, h.topic, h.id, msgs, "")
		}
	}
	if err != nil {
		return fmt.Errorf("add message to %s/%s: %w", h.topic, h.id, err)
	}
	return nil
}

// Messages returns every message of the conversation, oldest first; none
// when it does not exist yet. Roles map back to langchaingo's types: user
// to HumanChatMessage, assistant to AIChatMessage, system to
// SystemChatMessage, tool to ToolChatMessage.
func (h *History) Messages(ctx context.Context) ([]llms.ChatMessage, error) {
	msgs, _, err := h.c.Messages(ctx, h.topic, h.id, 0)
	if errors.Is(err, client.ErrNotFound) {
		return []llms.ChatMessage{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("messages of %s/%s: %w", h.topic, h.id, err)
	}
	out := make([]llms.ChatMessage, len(msgs))
	for i, m := range msgs {
		out[i] = fromAPI(m)
	}
	return out, nil
}

// SetMessages replaces the conversation's messages with msgs in one
// write, creating the topic and the conversation when they do not exist.
// The context's text, tags, model and expiry are kept; its running summary
// and its embeddings, which described the old messages, are dropped (a
// router that auto-embeds embeds it again). ErrUnsupportedMessage (nothing
// is written) when one of msgs cannot be stored whole.
func (h *History) SetMessages(ctx context.Context, msgs []llms.ChatMessage) error {
	api := make([]client.Message, len(msgs))
	for i, m := range msgs {
		var err error
		if api[i], err = toAPI(m); err != nil {
			return fmt.Errorf("set messages of %s/%s: message %d: %w", h.topic, h.id, i, err)
		}
	}
	if err := h.replace(ctx, api); err != nil {
		return fmt.Errorf("set messages of %s/%s: %w", h.topic, h.id, err)
	}
	return nil
}

// Clear removes every message of the conversation, keeping the context
// itself as SetMessages does. A conversation that does not exist stays so.
func (h *History) Clear(ctx context.Context) error {
	if err := h.replace(ctx, nil); err != nil {
		return fmt.Errorf("clear %s/%s: %w", h.topic, h.id, err)
	}
	return nil
}

// replace writes msgs as the conversation's messages over the version it
// reads (If-Match), so an append made in between is never overwritten
// unseen: the write fails and the loop reads again.
func (h *History) replace(ctx context.Context, msgs []client.Message) error {
	for range maxReplaceAttempts {
		cur, err := h.c.GetContext(ctx, h.topic, h.id)
		switch {
		case errors.Is(err, client.ErrNotFound):
			if len(msgs) == 0 {
				return nil // nothing to clear
			}
			doc := client.Document{Content: client.Content{Messages: msgs}}
			_, err = h.c.PutContext(ctx, h.topic, h.id, doc, &client.WriteOptions{IfNoneMatch: true})
			if errors.Is(err, client.ErrNotFound) {
				if err = ensureTopic(ctx, h.c, h.topic); err == nil {
					_, err = h.c.PutContext(ctx, h.topic, h.id, doc, &client.WriteOptions{IfNoneMatch: true})
				}
			}
		case err != nil:
			return err
		default:
			doc := client.Document{Metadata: cur.Metadata, Content: client.Content{Text: cur.Content.Text, Messages: msgs}}
			doc.Metadata.EmbeddingModel, doc.Metadata.EmbeddingPending = "", false
			_, err = h.c.PutContext(ctx, h.topic, h.id, doc, &client.WriteOptions{IfMatch: cur.ETag})
		}
		if !errors.Is(err, client.ErrFailedPrecondition) {
			return err
		}
		// Someone wrote (or created, or deleted) the conversation since
		// it was read: read it again.
	}
	return fmt.Errorf("%w: the conversation changed under %d attempts to replace it; retry", client.ErrFailedPrecondition, maxReplaceAttempts)
}

// ensureTopic creates topic unless it exists.
func ensureTopic(ctx context.Context, c *client.Client, topic string) error {
	_, err := c.CreateTopic(ctx, client.Topic{Name: topic})
	if err != nil && !errors.Is(err, client.ErrAlreadyExists) {
		return fmt.Errorf("create topic %s: %w", topic, err)
	}
	return nil
}

// toAPI maps a langchaingo message to a stored one: human to user, ai to
// assistant, system and tool as they are. What the stored form cannot hold
// is refused rather than dropped.
func toAPI(m llms.ChatMessage) (client.Message, error) {
	switch v := m.(type) {
	case nil:
		return client.Message{}, fmt.Errorf("%w: nil message", ErrUnsupportedMessage)
	case llms.AIChatMessage:
		return aiToAPI(v)
	case *llms.AIChatMessage:
		return aiToAPI(*v)
	case llms.ToolChatMessage:
		return toolToAPI(v)
	case *llms.ToolChatMessage:
		return toolToAPI(*v)
	case llms.GenericChatMessage:
		return genericToAPI(v)
	case *llms.GenericChatMessage:
		return genericToAPI(*v)
	}
	switch t := m.GetType(); t {
	case llms.ChatMessageTypeHuman:
		return client.Message{Role: "user", Content: m.GetContent()}, nil
	case llms.ChatMessageTypeAI:
		return client.Message{Role: "assistant", Content: m.GetContent()}, nil
	case llms.ChatMessageTypeSystem:
		return client.Message{Role: "system", Content: m.GetContent()}, nil
	case llms.ChatMessageTypeTool:
		return client.Message{Role: "tool", Content: m.GetContent()}, nil
	case llms.ChatMessageTypeFunction:
		return client.Message{}, fmt.Errorf("%w: function messages have no stored form (roles: system, user, assistant, tool)", ErrUnsupportedMessage)
	default:
		return client.Message{}, fmt.Errorf("%w: message type %q has no stored form (roles: system, user, assistant, tool)", ErrUnsupportedMessage, truncate(string(t)))
	}
}

func aiToAPI(m llms.AIChatMessage) (client.Message, error) {
	if m.FunctionCall != nil || len(m.ToolCalls) > 0 || m.ReasoningContent != "" {
		return client.Message{}, fmt.Errorf("%w: an AI message with tool calls, a function call or reasoning content (a stored message is a role and a text)", ErrUnsupportedMessage)
	}
	return client.Message{Role: "assistant", Content: m.Content}, nil
}

func toolToAPI(m llms.ToolChatMessage) (client.Message, error) {
	if m.ID != "" {
		return client.Message{}, fmt.Errorf("%w: a tool message with tool call id %q (a stored message is a role and a text)", ErrUnsupportedMessage, truncate(m.ID))
	}
	return client.Message{Role: "tool", Content: m.Content}, nil
}

func genericToAPI(m llms.GenericChatMessage) (client.Message, error) {
	if m.Name != "" {
		return client.Message{}, fmt.Errorf("%w: a message of named speaker %q (a stored message is a role and a text)", ErrUnsupportedMessage, truncate(m.Name))
	}
	switch m.Role {
	case "user", "human":
		return client.Message{Role: "user", Content: m.Content}, nil
	case "assistant", "ai":
		return client.Message{Role: "assistant", Content: m.Content}, nil
	case "system", "tool":
		return client.Message{Role: m.Role, Content: m.Content}, nil
	}
	return client.Message{}, fmt.Errorf("%w: role %q is not one of system, user, assistant, tool", ErrUnsupportedMessage, truncate(m.Role))
}

// fromAPI maps a stored message to langchaingo's type for its role; a
// role this package does not know (a newer router's) stays generic.
func fromAPI(m client.Message) llms.ChatMessage {
	switch m.Role {
	case "user":
		return llms.HumanChatMessage{Content: m.Content}
	case "assistant":
		return llms.AIChatMessage{Content: m.Content}
	case "system":
		return llms.SystemChatMessage{Content: m.Content}
	case "tool":
		return llms.ToolChatMessage{Content: m.Content}
	}
	return llms.GenericChatMessage{Role: m.Role, Content: m.Content}
}
