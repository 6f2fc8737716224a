package langchaingo

import (
	"errors"
	"fmt"
	"regexp"

	"github.com/go-kvdb/go-kvdb/client"
)

// Sentinel errors of the checks this package makes before it sends
// anything: each also matches client.ErrInvalidArgument with errors.Is, as
// the router's own 400 answers do, so a caller tests bad input one way
// wherever it was caught. Such a call changes nothing.
var (
	// ErrInvalidArgument: an empty or malformed topic name or context id,
	// a k outside 1..100, a score threshold outside 0..1, an empty query,
	// an option a call does not take.
	ErrInvalidArgument error = &invalidError{"invalid argument"}
	// ErrUnsupportedMessage: a chat message Go-KVDB cannot store without
	// losing part of it. A stored message is a role (system, user,
	// assistant or tool) and a text; function messages, tool call ids, an
	// AI message's tool or function calls and named speakers have no place
	// in it.
	ErrUnsupportedMessage error = &invalidError{"unsupported message"}
	// ErrInvalidDocument: a document without page content, or with
	// metadata that does not fit in tags (see the package documentation).
	ErrInvalidDocument error = &invalidError{"invalid document"}
	// ErrInvalidFilter: filters that are not a map of metadata values.
	ErrInvalidFilter error = &invalidError{"invalid filter"}
)

// ErrNotEmbedded is returned by AddDocuments when the store has no
// embedder and the router stored a document without embedding it: the
// router was started without -embed-model. That document (the first) is
// deleted again and no other is written; the topic, if the call created
// it, stays.
var ErrNotEmbedded = errors.New("document not embedded: give the store an embedder or start the router with -embed-model")

// invalidError is a sentinel that also matches client.ErrInvalidArgument.
type invalidError struct{ msg string }

func (e *invalidError) Error() string        { return e.msg }
func (e *invalidError) Is(target error) bool { return target == client.ErrInvalidArgument }

// The router's rules for topic names and context ids (README, "Topics" and
// "Contexts"), checked here so that a bad one fails when the history or
// store is made, not at its first use.
var (
	nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)
	idRE   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,255}$`)
)

func checkTopic(s string) error {
	if !nameRE.MatchString(s) {
		return fmt.Errorf("topic name %q: %w: want ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$", truncate(s), ErrInvalidArgument)
	}
	return nil
}

func checkID(s string) error {
	if !idRE.MatchString(s) {
		return fmt.Errorf("context id %q: %w: want ^[A-Za-z0-9][A-Za-z0-9._:-]{0,255}$", truncate(s), ErrInvalidArgument)
	}
	return nil
}

// truncate keeps error messages short when a caller passes a huge value.
func truncate(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return s[:max] + "…"
}
