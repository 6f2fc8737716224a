package httpapi

import (
	"net/http"

	"github.com/go-kvdb/go-kvdb/router/apierr"
	"github.com/go-kvdb/go-kvdb/router/placement"
	"github.com/labstack/echo/v4"
)

// adminRemove takes a shard out of the wanted Shape and starts the
// rebalance that drains it: POST /api/v1/admin/remove?shard=NAME or
// DELETE /api/v1/admin/shards/NAME. It answers 202 with the cluster; 404
// for a shard the cluster does not hold; 412 when the router's shards come
// from a config file (edit it and reload instead) or when the removal would
// leave fewer shards than replicas.
func (a *API) adminRemove(c echo.Context) error {
	name := c.QueryParam("shard")
	if name == "" {
		name = param(c, "shard")
	}
	if name == "" {
		return apierr.Errorf(apierr.CodeInvalidArgument, "shard: required (?shard=NAME)")
	}
	if err := a.cluster.Remove(name); err != nil {
		return err
	}
	return c.JSON(http.StatusAccepted, a.cluster.Info())
}

func (a *API) clusterStatus(c echo.Context) error {
	return c.JSON(http.StatusOK, a.cluster.Info())
}

// adminRepair starts a repair pass; with ?wait=true it runs it and answers
// with its outcome.
func (a *API) adminRepair(c echo.Context) error {
	wait, err := boolParam(c, "wait")
	if err != nil {
		return err
	}
	if wait {
		st, err := a.cluster.Repair(c.Request().Context())
		if err != nil {
			return &apierr.Error{Code: apierr.CodeUnavailable, Message: "repair failed: " + err.Error(), Err: err}
		}
		return c.JSON(http.StatusOK, map[string]any{"repair": st})
	}
	a.cluster.RequestRepair()
	return c.JSON(http.StatusAccepted, map[string]any{"repair": a.cluster.RepairStatus()})
}

// adminReindex asks every shard to rebuild its vector indexes: 202 with
// the shards asked; they rebuild in the background.
func (a *API) adminReindex(c echo.Context) error {
	shards, err := a.cluster.Reindex(c.Request().Context())
	if err != nil {
		return err
	}
	return c.JSON(http.StatusAccepted, map[string]any{"reindex": map[string]any{"shards": shards}})
}

// adminReload re-reads the configuration and starts a rebalance if the
// Shape changed.
func (a *API) adminReload(c echo.Context) error {
	if err := a.cluster.Reload(); err != nil {
		return apierr.Errorf(apierr.CodeFailedPrecondition, "%v", err)
	}
	return c.JSON(http.StatusAccepted, a.cluster.Info())
}

// ready answers /readyz: 503 while so many shards are down that some key
// may have no live replica holding its newest write.
func (a *API) ready(c echo.Context) error {
	t := a.cluster.Topology()
	for _, sh := range t.Shapes() {
		down := 0
		var names []string
		for _, n := range sh.Ring.Nodes() {
			if !n.Up() {
				down++
				names = append(names, n.Name)
			}
		}
		if down > sh.Replicas-placement.Quorum(sh.Replicas) {
			return apierr.Errorf(apierr.CodeUnavailable, "shards unreachable: %v", names)
		}
	}
	return c.JSONBlob(http.StatusOK, []byte(`{"status":"ready"}`))
}
