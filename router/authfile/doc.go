// Package authfile owns the API key file: parsing it, looking a secret up
// in constant time, adding keys, roles and the access levels a route
// needs, and a key's topic patterns. Secrets are stored nowhere (only a
// salted hash) and never logged. It imports nothing of router/ above it.
package authfile
