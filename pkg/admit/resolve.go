package admit

import (
	"fmt"
	"net/http"

	"github.com/terroir-ai/terroir/pkg/catalog"
	"github.com/terroir-ai/terroir/pkg/control"
	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/pkg/route"
)

// Admitter resolves parsed requests against the control plane and the
// catalog and routes them. It holds no state of its own: every field is
// shared and safe for concurrent use.
type Admitter struct {
	State    *control.State
	Catalog  *catalog.Catalog
	Capacity *route.Capacity
	// Geos are the geographies this instance serves (and may publish
	// to), sorted.
	Geos []string
}

// Resolved is a request whose deployment was found and allows it.
type Resolved struct {
	Deployment control.Deployment
	// Model is the deployment's catalog model.
	Model     catalog.Model
	Operation events.Operation
	Request   Request
}

// Resolve finds the deployment named deployment of resource res (a body's
// model, or the deployment of an Azure deployment path) and checks that
// its model has op's capability and writes at least the output tokens req
// asks per choice. A real-time request (batch false) to a GlobalBatch or
// DataZoneBatch deployment is refused: those serve only the Batch API; a
// batch line (batch true) may use a deployment of any SKU. Refusals are
// *Refusal: 400 when deployment is empty (model is required) or the model
// cannot serve the request, 404 DeploymentNotFound.
func (a *Admitter) Resolve(res control.Resource, op events.Operation, deployment string, req Request, batch bool) (Resolved, error) {
	if deployment == "" {
		return Resolved{}, Invalid("model", "model is required: the name of one of your deployments")
	}
	dep, ok := a.State.Deployment(res.Name, deployment)
	if !ok {
		return Resolved{}, &Refusal{Status: http.StatusNotFound, Type: TypeNotFound, Code: "DeploymentNotFound",
			Message: fmt.Sprintf("The API deployment %q does not exist in this resource. Create it with the management API first.", deployment)}
	}
	m, ok := a.Catalog.Model(dep.Model)
	if !ok || !m.Can(capabilityOf[op]) {
		return Resolved{}, &Refusal{Status: http.StatusBadRequest, Type: TypeInvalidRequest, Code: "OperationNotSupported", Param: "model",
			Message: fmt.Sprintf("deployment %q (model %s) does not support %s", dep.Name, dep.Model, op)}
	}
	if req.LimitParam != "" && m.MaxOutputTokens > 0 && req.Limit > m.MaxOutputTokens {
		return Resolved{}, Invalid(req.LimitParam, "%s is too large: %d. The model of deployment %q (%s) writes at most %d tokens per choice.",
			req.LimitParam, req.Limit, dep.Name, dep.Model, m.MaxOutputTokens)
	}
	if !batch && (dep.SKU == events.SKUGlobalBatch || dep.SKU == events.SKUDataZoneBatch) {
		return Resolved{}, &Refusal{Status: http.StatusBadRequest, Type: TypeInvalidRequest, Code: "OperationNotSupported", Param: "model",
			Message: fmt.Sprintf("deployment %q is a %s deployment; send its requests through the Batch API", dep.Name, dep.SKU)}
	}
	return Resolved{Deployment: dep, Model: m, Operation: op, Request: req}, nil
}

// Route chooses the geography that processes r for resource res, among
// a.Geos, keeping residency (route.Capacity.Choose). When none can, the
// refusal is a 503 NoCapacity *Refusal whose Err says why, for the log.
func (a *Admitter) Route(res control.Resource, r Resolved) (string, error) {
	dep := r.Deployment
	geo, err := a.Capacity.Choose(res.Location, dep.SKU, dep.Model, a.Geos)
	if err != nil {
		return "", &Refusal{Status: http.StatusServiceUnavailable, Type: TypeServer, Code: "NoCapacity", Err: err,
			Message: fmt.Sprintf("no geography allowed for deployment %q (%s) can process the request now; retry later", dep.Name, dep.SKU)}
	}
	return geo, nil
}
