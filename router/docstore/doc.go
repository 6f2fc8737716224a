// Package docstore owns topics, contexts and their messages over the
// cluster: reads, writes (conditional ones included), lists, appends, the
// hot cache's use and the topic-deletion mask, and the TTL index with its
// background purge. The LLM features join every write through Hooks. It
// validates nothing a request carries (package httpapi and schema do) and
// never speaks HTTP.
package docstore
