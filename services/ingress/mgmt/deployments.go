package mgmt

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/terroir-ai/terroir/pkg/catalog"
	"github.com/terroir-ai/terroir/pkg/control"
	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/pkg/geo"
	"github.com/terroir-ai/terroir/services/ingress/apierr"
)

// skus are the deployment types, in the order the API lists them.
var skus = []events.SKU{events.SKUStandard, events.SKUDataZoneStandard, events.SKUGlobalStandard,
	events.SKUGlobalBatch, events.SKUDataZoneBatch, events.SKUManagedCompute, events.SKUServerless}

func skuNames() string {
	var s []string
	for _, k := range skus {
		s = append(s, string(k))
	}
	return strings.Join(s, ", ")
}

// maxCapacity bounds a deployment's capacity, in thousands of tokens per
// minute.
const maxCapacity = 1_000_000

// defaultPolicyAliases are the names Azure tools use for the default
// content-filter policy.
var defaultPolicyAliases = []string{"Microsoft.Default", "Microsoft.DefaultV2"}

// deploymentJSON mirrors an Azure deployment.
type deploymentJSON struct {
	Name       string  `json:"name"`
	SKU        skuJSON `json:"sku"`
	Properties struct {
		Model             modelJSON         `json:"model"`
		RAIPolicyName     string            `json:"raiPolicyName"`
		ProvisioningState string            `json:"provisioningState"`
		Capabilities      map[string]string `json:"capabilities"`
	} `json:"properties"`
}

type skuJSON struct {
	Name     events.SKU `json:"name"`
	Capacity int        `json:"capacity"`
}

type modelJSON struct {
	Format  string `json:"format"`
	Name    string `json:"name"`
	Version string `json:"version"`
}

type deploymentInput struct {
	Name *string `json:"name"`
	SKU  *struct {
		Name     *string `json:"name"`
		Capacity *int    `json:"capacity"`
	} `json:"sku"`
	Properties *struct {
		Model *struct {
			Format  *string `json:"format"`
			Name    *string `json:"name"`
			Version *string `json:"version"`
		} `json:"model"`
		RAIPolicyName     *string         `json:"raiPolicyName"`
		ProvisioningState json.RawMessage `json:"provisioningState"`
		Capabilities      json.RawMessage `json:"capabilities"`
	} `json:"properties"`
}

func (a *API) renderDeployment(d control.Deployment) deploymentJSON {
	var out deploymentJSON
	out.Name = d.Name
	out.SKU = skuJSON{Name: d.SKU, Capacity: d.Capacity}
	out.Properties.Model = modelJSON{Format: "OpenAI", Name: d.Model, Version: d.ModelVersion}
	out.Properties.RAIPolicyName = d.FilterPolicy
	out.Properties.ProvisioningState = "Succeeded"
	out.Properties.Capabilities = map[string]string{}
	if m, ok := a.cfg.Catalog.Model(d.Model); ok {
		for _, c := range m.Capabilities {
			out.Properties.Capabilities[map[string]string{
				catalog.CapabilityChat: "chatCompletion", catalog.CapabilityCompletions: "completion",
				catalog.CapabilityEmbeddings: "embeddings", catalog.CapabilityFineTuning: "fineTune"}[c]] = "true"
		}
	}
	return out
}

func (a *API) putDeployment(w http.ResponseWriter, r *http.Request, c caller) error {
	var in deploymentInput
	name, err := a.readNamed(w, r, "item", "deployment", itemPattern, &in, &in.Name)
	if err != nil {
		return err
	}
	a.writes.Lock()
	defer a.writes.Unlock()
	res, err := a.resourceOf(r)
	if err != nil {
		return err
	}
	d, model, err := a.deploymentFrom(res, name, in)
	if err != nil {
		return err
	}
	if err := a.checkPolicies(res, d, model); err != nil {
		return err
	}
	old, exists := a.cfg.State.Deployment(res.Name, name)
	if exists {
		d.CreatedAt = old.CreatedAt
	}
	return a.save(w, r, c, []string{res.Location}, events.ControlDeployment, res.Name, name, d, a.renderDeployment(d), old, exists)
}

// deploymentFrom checks a deployment body against the catalog, the
// resource's geography and its filter policies.
func (a *API) deploymentFrom(res control.Resource, name string, in deploymentInput) (control.Deployment, catalog.Model, error) {
	d := control.Deployment{Name: name, Resource: res.Name, Capacity: 1, FilterPolicy: control.DefaultFilterPolicyName, CreatedAt: a.cfg.Now().UTC()}
	if in.SKU == nil || in.SKU.Name == nil {
		return d, catalog.Model{}, apierr.Invalid("sku.name", "sku.name is required: one of %s", skuNames())
	}
	i := slices.IndexFunc(skus, func(s events.SKU) bool { return strings.EqualFold(string(s), *in.SKU.Name) })
	if i < 0 {
		return d, catalog.Model{}, apierr.Invalid("sku.name", "unknown SKU %q: sku.name must be one of %s", *in.SKU.Name, skuNames())
	}
	d.SKU = skus[i]
	if (d.SKU == events.SKUDataZoneStandard || d.SKU == events.SKUDataZoneBatch) && res.DataZone == "" {
		g, _ := geo.Lookup(res.Location)
		return d, catalog.Model{}, apierr.Invalid("sku.name", "%s needs a data zone, and the resource's location %q (%s) has none; use Standard", d.SKU, res.Location, g.Name)
	}
	if in.SKU.Capacity != nil {
		d.Capacity = *in.SKU.Capacity
	}
	if d.Capacity < 1 || d.Capacity > maxCapacity {
		return d, catalog.Model{}, apierr.Invalid("sku.capacity", "sku.capacity must be from 1 to %d (thousands of tokens per minute)", maxCapacity)
	}
	p := in.Properties
	if p == nil || p.Model == nil || p.Model.Name == nil || *p.Model.Name == "" {
		return d, catalog.Model{}, apierr.Invalid("properties.model.name", "properties.model.name is required: a model of the catalog (GET /mgmt/catalog)")
	}
	model, ok := a.cfg.Catalog.Model(*p.Model.Name)
	if !ok {
		return d, model, apierr.Invalid("properties.model.name", "unknown model %q: properties.model.name must be a model of the catalog (GET /mgmt/catalog)", *p.Model.Name)
	}
	d.Model, d.ModelVersion = model.ID, model.Version
	if p.Model.Version != nil && *p.Model.Version != "" && *p.Model.Version != model.Version {
		return d, model, apierr.Invalid("properties.model.version", "model %q has version %q in the catalog, not %q", model.ID, model.Version, *p.Model.Version)
	}
	if p.RAIPolicyName != nil && *p.RAIPolicyName != "" {
		d.FilterPolicy = *p.RAIPolicyName
		if slices.Contains(defaultPolicyAliases, d.FilterPolicy) {
			d.FilterPolicy = control.DefaultFilterPolicyName
		}
	}
	if _, ok := a.cfg.State.FilterPolicy(res.Name, d.FilterPolicy); !ok {
		return d, model, apierr.Invalid("properties.raiPolicyName", "content-filter policy %q does not exist in resource %q", d.FilterPolicy, res.Name)
	}
	return d, model, nil
}

// checkPolicies evaluates every deployment policy assigned to the
// resource; the first rule that denies is named in a 403.
func (a *API) checkPolicies(res control.Resource, d control.Deployment, m catalog.Model) error {
	for _, p := range a.cfg.State.PoliciesFor(res.Name) {
		if rule, why := evaluate(p, d, m); rule != "" {
			return apierr.Forbidden("RequestDisallowedByPolicy",
				"deployment %q of resource %q is disallowed by deployment policy %q, rule %s: %s", d.Name, res.Name, p.Name, rule, why)
		}
	}
	return nil
}

// evaluate returns the rule of p that denies d of model m, and why; ""
// when p allows it.
func evaluate(p control.DeploymentPolicy, d control.Deployment, m catalog.Model) (rule, why string) {
	switch {
	case len(p.AllowedModels) > 0 && !slices.Contains(p.AllowedModels, m.ID):
		return "allowedModels", fmt.Sprintf("model %q is not one of %s", m.ID, strings.Join(p.AllowedModels, ", "))
	case len(p.AllowedPublishers) > 0 && !slices.ContainsFunc(p.AllowedPublishers, func(s string) bool { return strings.EqualFold(s, m.Publisher) }):
		return "allowedPublishers", fmt.Sprintf("publisher %q of model %q is not one of %s", m.Publisher, m.ID, strings.Join(p.AllowedPublishers, ", "))
	case p.CuratedOnly && !m.Curated:
		return "curatedOnly", fmt.Sprintf("model %q is not curated (its container and weights were not scanned)", m.ID)
	case len(p.AllowedSKUs) > 0 && !slices.Contains(p.AllowedSKUs, d.SKU):
		var allowed []string
		for _, s := range p.AllowedSKUs {
			allowed = append(allowed, string(s))
		}
		return "allowedSkus", fmt.Sprintf("SKU %s is not one of %s", d.SKU, strings.Join(allowed, ", "))
	}
	return "", ""
}

// policyJSON is a deployment policy as the API shows it.
type policyJSON struct {
	Name       string `json:"name"`
	Properties struct {
		Description string          `json:"description"`
		AssignedTo  []string        `json:"assignedTo"`
		Rules       policyRulesJSON `json:"rules"`
		// NonCompliant lists existing deployments of assigned resources
		// that the policy would refuse now (it is evaluated when a
		// deployment is created or changed, so they keep running).
		NonCompliant []string `json:"nonCompliantDeployments"`
	} `json:"properties"`
}

type policyRulesJSON struct {
	AllowedModels     []string     `json:"allowedModels"`
	AllowedPublishers []string     `json:"allowedPublishers"`
	CuratedOnly       bool         `json:"curatedOnly"`
	AllowedSKUs       []events.SKU `json:"allowedSkus"`
}

type policyInput struct {
	Name       *string `json:"name"`
	Properties *struct {
		Description *string  `json:"description"`
		AssignedTo  []string `json:"assignedTo"`
		Rules       *struct {
			AllowedModels     []string `json:"allowedModels"`
			AllowedPublishers []string `json:"allowedPublishers"`
			CuratedOnly       *bool    `json:"curatedOnly"`
			AllowedSKUs       []string `json:"allowedSkus"`
		} `json:"rules"`
		NonCompliant json.RawMessage `json:"nonCompliantDeployments"`
	} `json:"properties"`
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func (a *API) renderPolicy(p control.DeploymentPolicy) policyJSON {
	var out policyJSON
	out.Name = p.Name
	out.Properties.Description = p.Description
	out.Properties.AssignedTo = nonNil(p.AssignedTo)
	out.Properties.Rules = policyRulesJSON{AllowedModels: nonNil(p.AllowedModels), AllowedPublishers: nonNil(p.AllowedPublishers),
		CuratedOnly: p.CuratedOnly, AllowedSKUs: nonNil(p.AllowedSKUs)}
	out.Properties.NonCompliant = []string{}
	for _, res := range a.cfg.State.Resources() {
		if !p.AppliesTo(res.Name) {
			continue
		}
		for _, d := range a.cfg.State.Deployments(res.Name) {
			m, _ := a.cfg.Catalog.Model(d.Model)
			if rule, _ := evaluate(p, d, m); rule != "" {
				out.Properties.NonCompliant = append(out.Properties.NonCompliant, res.Name+"/"+d.Name)
			}
		}
	}
	return out
}

func (a *API) listPolicies(w http.ResponseWriter, _ *http.Request, _ caller) error {
	return writeJSON(w, http.StatusOK, listOf(a.cfg.State.DeploymentPolicies(), a.renderPolicy))
}

func (a *API) getPolicy(w http.ResponseWriter, r *http.Request, _ caller) error {
	p, ok := a.cfg.State.DeploymentPolicy(r.PathValue("name"))
	if !ok {
		return apierr.NotFound("PolicyNotFound", "deployment policy %q not found", r.PathValue("name"))
	}
	return writeJSON(w, http.StatusOK, a.renderPolicy(p))
}

// putPolicy creates or replaces a deployment policy. Policies belong to
// no resource, so they are written to the control topic of every
// geography this instance serves.
func (a *API) putPolicy(w http.ResponseWriter, r *http.Request, c caller) error {
	var in policyInput
	name, err := a.readNamed(w, r, "name", "policy", itemPattern, &in, &in.Name)
	if err != nil {
		return err
	}
	p := control.DeploymentPolicy{Name: name}
	if pr := in.Properties; pr != nil {
		if pr.Description != nil {
			p.Description = *pr.Description
		}
		for i, res := range pr.AssignedTo {
			if res != "*" {
				if err := checkName(fmt.Sprintf("properties.assignedTo[%d]", i), "resource", res, resourcePattern); err != nil {
					return err
				}
			}
		}
		p.AssignedTo = pr.AssignedTo
		if ru := pr.Rules; ru != nil {
			p.AllowedModels, p.AllowedPublishers = ru.AllowedModels, ru.AllowedPublishers
			if ru.CuratedOnly != nil {
				p.CuratedOnly = *ru.CuratedOnly
			}
			for i, s := range ru.AllowedSKUs {
				k := slices.IndexFunc(skus, func(x events.SKU) bool { return strings.EqualFold(string(x), s) })
				if k < 0 {
					return apierr.Invalid(fmt.Sprintf("properties.rules.allowedSkus[%d]", i), "unknown SKU %q: one of %s", s, skuNames())
				}
				p.AllowedSKUs = append(p.AllowedSKUs, skus[k])
			}
		}
	}
	a.writes.Lock()
	defer a.writes.Unlock()
	old, exists := a.cfg.State.DeploymentPolicy(name)
	return a.save(w, r, c, a.cfg.Geos, events.ControlDeploymentPolicy, "", name, p, a.renderPolicy(p), old, exists)
}

func (a *API) deletePolicy(w http.ResponseWriter, r *http.Request, c caller) error {
	a.writes.Lock()
	defer a.writes.Unlock()
	name := r.PathValue("name")
	if _, ok := a.cfg.State.DeploymentPolicy(name); !ok {
		return apierr.NotFound("PolicyNotFound", "deployment policy %q not found", name)
	}
	if err := a.commit(r.Context(), c, a.cfg.Geos, "delete", events.ControlDeploymentPolicy, "", name, nil); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
