package mgmt

import (
	"net/http"
	"strings"

	"github.com/terroir-ai/terroir/pkg/control"
	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/services/ingress/apierr"
)

// child describes a kind of object a resource owns (deployments,
// content-filter policies, blocklists), for the handlers that list, get
// and delete them all the same way.
type child[T any] struct {
	kind events.ControlKind
	// what names the kind in messages; notFound is the error code.
	what, notFound string
	get            func(resource, name string) (T, bool)
	list           func(resource string) []T
	render         func(T) any
	// inUse, when set, refuses deleting an object something still uses.
	inUse func(resource, name string) error
	// builtIn, when set, names the object that cannot be deleted.
	builtIn string
}

func (a *API) deployments() child[control.Deployment] {
	return child[control.Deployment]{kind: events.ControlDeployment, what: "deployment", notFound: "DeploymentNotFound",
		get: a.cfg.State.Deployment, list: a.cfg.State.Deployments,
		render: func(d control.Deployment) any { return a.renderDeployment(d) }}
}

func (a *API) filterPolicies() child[control.FilterPolicy] {
	return child[control.FilterPolicy]{kind: events.ControlFilterPolicy, what: "content-filter policy", notFound: "ContentFilterPolicyNotFound",
		get: a.cfg.State.FilterPolicy, list: a.cfg.State.FilterPolicies,
		render:  func(p control.FilterPolicy) any { return renderFilterPolicy(p) },
		builtIn: control.DefaultFilterPolicyName,
		inUse: func(resource, name string) error {
			var users []string
			for _, d := range a.cfg.State.Deployments(resource) {
				if d.FilterPolicy == name {
					users = append(users, d.Name)
				}
			}
			return inUse("ContentFilterPolicyInUse", "content-filter policy", name, "is used by deployments", users)
		}}
}

func (a *API) blocklists() child[control.Blocklist] {
	return child[control.Blocklist]{kind: events.ControlBlocklist, what: "blocklist", notFound: "BlocklistNotFound",
		get: a.cfg.State.Blocklist, list: a.cfg.State.Blocklists,
		render: func(b control.Blocklist) any { return renderBlocklist(b) },
		inUse: func(resource, name string) error {
			var users []string
			for _, p := range a.cfg.State.FilterPolicies(resource) {
				if p.UsesBlocklist(name) {
					users = append(users, p.Name)
				}
			}
			return inUse("BlocklistInUse", "blocklist", name, "is applied by content-filter policies", users)
		}}
}

func inUse(code, what, name, how string, users []string) error {
	if len(users) == 0 {
		return nil
	}
	return apierr.Conflict(code, "name", "%s %q %s %s; change them first", what, name, how, strings.Join(users, ", "))
}

func listChildren[T any](a *API, ch child[T]) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request, _ caller) error {
		res, err := a.resourceOf(r)
		if err != nil {
			return err
		}
		return writeJSON(w, http.StatusOK, listOf(ch.list(res.Name), ch.render))
	}
}

func getChild[T any](a *API, ch child[T]) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request, _ caller) error {
		res, err := a.resourceOf(r)
		if err != nil {
			return err
		}
		v, ok := ch.get(res.Name, r.PathValue("item"))
		if !ok {
			return apierr.NotFound(ch.notFound, "%s %q of resource %q not found", ch.what, r.PathValue("item"), res.Name)
		}
		return writeJSON(w, http.StatusOK, ch.render(v))
	}
}

func deleteChild[T any](a *API, ch child[T]) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request, c caller) error {
		a.writes.Lock()
		defer a.writes.Unlock()
		res, err := a.resourceOf(r)
		if err != nil {
			return err
		}
		name := r.PathValue("item")
		if ch.builtIn != "" && name == ch.builtIn {
			return apierr.Invalid("name", "the %q %s is built in and cannot be deleted", name, ch.what)
		}
		if _, ok := ch.get(res.Name, name); !ok {
			return apierr.NotFound(ch.notFound, "%s %q of resource %q not found", ch.what, name, res.Name)
		}
		if ch.inUse != nil {
			if err := ch.inUse(res.Name, name); err != nil {
				return err
			}
		}
		if err := a.commit(r.Context(), c, []string{res.Location}, "delete", ch.kind, res.Name, name, nil); err != nil {
			return err
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
}

// save commits spec as the creation (201) or the update (200, auditing
// the names of the fields that changed from old) of kind/id on geos, and
// answers with rendered.
func (a *API) save(w http.ResponseWriter, r *http.Request, c caller, geos []string, kind events.ControlKind, resource, id string, spec, rendered, old any, exists bool) error {
	action, status, fields := "create", http.StatusCreated, []string(nil)
	if exists {
		action, status, fields = "update", http.StatusOK, changedFields(old, spec)
	}
	if err := a.commit(r.Context(), c, geos, action, kind, resource, id, spec, fields...); err != nil {
		return err
	}
	return writeJSON(w, status, rendered)
}
