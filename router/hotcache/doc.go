// Package hotcache owns the router's hot set: rendered records by key,
// each with its version, never replaced by an older one. It imports
// nothing of router/.
package hotcache
