package router

import (
	_ "embed"
	"net/http"

	"github.com/labstack/echo/v4"
)

// openAPISpec is the OpenAPI 3 description of the public API. A test
// (openapi_test.go) drives every endpoint and validates each real answer
// against it, so the two cannot drift apart.
//
//go:embed openapi.yaml
var openAPISpec []byte

// OpenAPI returns the OpenAPI 3 description of the API (YAML).
func OpenAPI() []byte { return openAPISpec }

// openAPIRoutes serves the description at GET /openapi.yaml.
func (r *Router) openAPIRoutes(e *echo.Echo) {
	e.GET("/openapi.yaml", func(c echo.Context) error {
		return c.Blob(http.StatusOK, "application/yaml", openAPISpec)
	})
}
