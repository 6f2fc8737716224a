// Package memory owns the pure policy of a conversation's memory: what a
// text or a prompt costs in tokens (estimated, then corrected per model by
// what the model server counted), what a chat sends to the model (its
// system messages and running summary in one system message, the turns
// the summary does not cover, the new turn), which of the oldest turns to
// fold into the summary when a conversation outgrows its budget, and, for
// the drop-in Ollama endpoint, what of a resent history is new, what the
// client lacks, and the memory text it is given instead.
//
// It never does I/O: no storage, no HTTP, no model calls. It plans; the
// caller reads the conversation, asks the summary model for the text of a
// planned fold, and stores the result. It speaks llmbridge.Message, the
// type a prompt is sent in, so a composed window goes to the model as it
// is; the caller converts stored messages at the boundary (same fields).
//
// # Caveats
//
// Token counts are estimates (about four characters a token), good for
// budgets, not for billing. A Summary's Messages counts every message it
// stands for, system messages included, as the stored conversation does.
package memory
