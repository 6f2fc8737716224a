package httpapi

import (
	_ "embed"
)

// openAPISpec is the OpenAPI 3 description of the public API. A test
// (openapi_test.go) drives every endpoint and validates each real answer
// against it, so the two cannot drift apart.
//
//go:embed openapi.yaml
var openAPISpec []byte

// OpenAPI returns the OpenAPI 3 description of the API (YAML).
func OpenAPI() []byte { return openAPISpec }
