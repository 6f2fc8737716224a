// Package apierr owns the API's error codes and the one table from code
// to HTTP status, and turns storage errors into API errors (an unreachable
// shard is 503 naming it). It imports nothing of router/.
package apierr
