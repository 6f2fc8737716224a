// Package router wires the router: it builds every part (package cluster,
// coord, codec, docstore, llm, maintenance, httpapi) in order in New,
// starts their background work under one context, and stops it on Close.
// It holds no logic of its own; cmd/router and the end-to-end tests need
// only Config, New, Handler, Reload, SetAuth and Close.
package router
