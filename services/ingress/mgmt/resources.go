package mgmt

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/mail"
	"slices"
	"strings"

	"github.com/terroir-ai/terroir/pkg/control"
	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/pkg/geo"
	"github.com/terroir-ai/terroir/services/ingress/apierr"
)

// resourceJSON is a resource as the API shows it, mirroring an Azure
// account.
type resourceJSON struct {
	Name       string            `json:"name"`
	Location   string            `json:"location"`
	Properties resourcePropsJSON `json:"properties"`
}

type resourcePropsJSON struct {
	Endpoint          string          `json:"endpoint"`
	ProvisioningState string          `json:"provisioningState"`
	DataZone          string          `json:"dataZone,omitempty"`
	Contact           control.Contact `json:"contact"`
	AbuseMonitoring   abuseJSON       `json:"abuseMonitoring"`
	// Capabilities holds ContentLogging=false exactly when content
	// logging is off, as Azure shows it.
	Capabilities       []capabilityJSON `json:"capabilities"`
	DeploymentPolicies []string         `json:"deploymentPolicies"`
	// BatchDrops is the resource's batch drop location in effect.
	BatchDrops  control.BatchDrops `json:"batchDrops"`
	DateCreated string             `json:"dateCreated"`
}

type abuseJSON struct {
	OptOutApproved bool `json:"optOutApproved"`
	ContentLogging bool `json:"contentLogging"`
}

type capabilityJSON struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// resourceInput is a PUT or PATCH body. Read-only fields are accepted
// (so a GET body can be sent back) and ignored.
type resourceInput struct {
	Name       *string `json:"name"`
	Location   *string `json:"location"`
	Properties *struct {
		Contact *struct {
			Name  *string `json:"name"`
			Email *string `json:"email"`
		} `json:"contact"`
		AbuseMonitoring *struct {
			OptOutApproved *bool `json:"optOutApproved"`
			ContentLogging *bool `json:"contentLogging"`
		} `json:"abuseMonitoring"`
		BatchDrops *struct {
			Enabled  *bool           `json:"enabled"`
			Location json.RawMessage `json:"location"`
		} `json:"batchDrops"`
		Endpoint           json.RawMessage `json:"endpoint"`
		ProvisioningState  json.RawMessage `json:"provisioningState"`
		DataZone           json.RawMessage `json:"dataZone"`
		Capabilities       json.RawMessage `json:"capabilities"`
		DeploymentPolicies json.RawMessage `json:"deploymentPolicies"`
		DateCreated        json.RawMessage `json:"dateCreated"`
	} `json:"properties"`
}

func (a *API) renderResource(res control.Resource) resourceJSON {
	out := resourceJSON{Name: res.Name, Location: res.Location, Properties: resourcePropsJSON{
		Endpoint:           strings.ReplaceAll(a.cfg.PublicURL, "{name}", res.Name),
		ProvisioningState:  "Succeeded",
		DataZone:           res.DataZone,
		Contact:            res.Contact,
		AbuseMonitoring:    abuseJSON{OptOutApproved: res.OptOutApproved, ContentLogging: res.ContentLogging},
		Capabilities:       []capabilityJSON{},
		DeploymentPolicies: []string{},
		BatchDrops:         res.Drops(),
		DateCreated:        res.CreatedAt.Format("2006-01-02T15:04:05.000Z"),
	}}
	if !res.ContentLogging {
		out.Properties.Capabilities = append(out.Properties.Capabilities, capabilityJSON{Name: "ContentLogging", Value: "false"})
	}
	for _, p := range a.cfg.State.PoliciesFor(res.Name) {
		out.Properties.DeploymentPolicies = append(out.Properties.DeploymentPolicies, p.Name)
	}
	return out
}

func (a *API) listResources(w http.ResponseWriter, _ *http.Request, _ caller) error {
	return writeJSON(w, http.StatusOK, listOf(a.cfg.State.Resources(), a.renderResource))
}

// getResource serves operators, and apps reading their own resource; any
// other resource is "not found" to an app, so it cannot learn which
// names exist.
func (a *API) getResource(w http.ResponseWriter, r *http.Request, c caller) error {
	if !c.operator && c.resource != r.PathValue("name") {
		return apierr.NotFound("ResourceNotFound", "resource %q not found", r.PathValue("name"))
	}
	res, err := a.resourceOf(r)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, a.renderResource(res))
}

func (a *API) putResource(w http.ResponseWriter, r *http.Request, c caller) error {
	return a.writeResource(w, r, c, false)
}

func (a *API) patchResource(w http.ResponseWriter, r *http.Request, c caller) error {
	return a.writeResource(w, r, c, true)
}

// writeResource creates or replaces (PUT) or merges into (PATCH) a
// resource.
func (a *API) writeResource(w http.ResponseWriter, r *http.Request, c caller, patch bool) error {
	var in resourceInput
	name, err := a.readNamed(w, r, "name", "resource", resourcePattern, &in, &in.Name)
	if err != nil {
		return err
	}
	a.writes.Lock()
	defer a.writes.Unlock()
	old, exists := a.cfg.State.Resource(name)
	if patch && !exists {
		return apierr.NotFound("ResourceNotFound", "resource %q not found; create it with PUT", name)
	}
	res := control.Resource{Name: name, ContentLogging: true, CreatedAt: a.cfg.Now().UTC()}
	if exists {
		res.Location, res.DataZone, res.CreatedAt = old.Location, old.DataZone, old.CreatedAt
		if patch {
			res = old
		}
	}
	if err := a.applyResourceInput(&res, in, exists); err != nil {
		return err
	}
	if !exists {
		// A resource created under the name of a deleted one may have
		// data keys again; what was shredded stays unreadable.
		for _, g := range a.cfg.Geos {
			if err := a.cfg.Keys.Reopen(r.Context(), g, name); err != nil {
				return err
			}
		}
	}
	return a.save(w, r, c, []string{res.Location}, events.ControlResource, name, name, res, a.renderResource(res), old, exists)
}

func (a *API) applyResourceInput(res *control.Resource, in resourceInput, exists bool) error {
	switch {
	case in.Location == nil && !exists:
		return apierr.Invalid("location", "location is required: one of %s", strings.Join(a.cfg.Geos, ", "))
	case in.Location != nil && exists && *in.Location != res.Location:
		return apierr.Conflict("LocationImmutable", "location", "the location of a resource cannot change (it is %q); create a new resource instead", res.Location)
	case in.Location != nil && !exists:
		loc := strings.ToLower(*in.Location)
		g, known := geo.Lookup(loc)
		if !known || !slices.Contains(a.cfg.Geos, loc) {
			return apierr.Invalid("location", "unknown geography %q: location must be one of %s", *in.Location, strings.Join(a.cfg.Geos, ", "))
		}
		res.Location, res.DataZone = loc, g.DataZone
	}
	if p := in.Properties; p != nil {
		if ct := p.Contact; ct != nil {
			if ct.Name != nil {
				if len(*ct.Name) > 200 {
					return apierr.Invalid("properties.contact.name", "properties.contact.name is longer than 200 characters")
				}
				res.Contact.Name = *ct.Name
			}
			if ct.Email != nil {
				if *ct.Email != "" {
					addr, err := mail.ParseAddress(*ct.Email)
					if err != nil || addr.Address != *ct.Email || len(*ct.Email) > 254 {
						return apierr.Invalid("properties.contact.email", "properties.contact.email is not an email address")
					}
				}
				res.Contact.Email = *ct.Email
			}
		}
		if am := p.AbuseMonitoring; am != nil {
			if am.OptOutApproved != nil {
				res.OptOutApproved = *am.OptOutApproved
			}
			if am.ContentLogging != nil {
				res.ContentLogging = *am.ContentLogging
			}
		}
	}
	if err := a.applyBatchDrops(res, in); err != nil {
		return err
	}
	if !res.ContentLogging && !res.OptOutApproved {
		return apierr.Conflict("ContentLoggingOptOutNotApproved", "properties.abuseMonitoring.contentLogging",
			"content logging can be turned off only for a resource approved for the abuse-monitoring opt-out (properties.abuseMonitoring.optOutApproved, set by the operator)")
	}
	return nil
}

// applyBatchDrops sets the resource's drop location from the input (a
// new resource without one gets the default) and checks that it overlaps
// no other resource's: one resource's drop files must never be within
// another's reach.
func (a *API) applyBatchDrops(res *control.Resource, in resourceInput) error {
	const param = "properties.batchDrops.location"
	d := res.Drops()
	if in.Properties != nil && in.Properties.BatchDrops != nil {
		bd := in.Properties.BatchDrops
		if bd.Enabled != nil {
			d.Enabled = *bd.Enabled
		}
		if len(bd.Location) > 0 && string(bd.Location) != "null" {
			var loc string
			if err := json.Unmarshal(bd.Location, &loc); err != nil {
				return apierr.Invalid(param, "%s must be a string: a folder such as \"%s\"", param, control.DefaultDropLocation(res.Name))
			}
			clean, err := control.CleanDropLocation(loc)
			if err != nil {
				return apierr.Invalid(param, "%s must be a relative folder of letters, digits, '-', '_' and '.' segments, none of them '.', '..', inbox, outbox or processed (%q is not)", param, loc)
			}
			d.Location = clean
		}
	}
	if _, err := control.CleanDropLocation(d.Location); err != nil {
		return apierr.Invalid(param, "%s: the default location %q is not a valid folder", param, d.Location)
	}
	for _, other := range a.cfg.State.Resources() {
		if other.Name != res.Name && control.DropLocationsOverlap(d.Location, other.Drops().Location) {
			return apierr.Invalid(param, "%s %q overlaps the drop location of another resource; choose a folder that neither contains nor lies inside another resource's", param, d.Location)
		}
	}
	res.BatchDrops = &d
	return nil
}

// deleteResource deletes a resource and everything it owns, and shreds
// its data keys in every geography so every copy of its content becomes
// unreadable.
func (a *API) deleteResource(w http.ResponseWriter, r *http.Request, c caller) error {
	a.writes.Lock()
	defer a.writes.Unlock()
	res, err := a.resourceOf(r)
	if err != nil {
		return err
	}
	ctx := r.Context()
	// Its files first: a failure leaves the resource in place for a retry.
	if a.cfg.Owned != nil {
		if err := a.cfg.Owned.DeleteResource(ctx, res); err != nil {
			return err
		}
	}
	// Each geography wraps its own data key of the resource (for requests
	// processed there): shred them all.
	for _, g := range a.cfg.Geos {
		if err := a.cfg.Keys.Shred(ctx, g, res.Name); err != nil {
			return err
		}
	}
	var changes []events.ControlChange
	del := func(kind events.ControlKind, id string) error {
		ch, err := a.change(c, kind, res.Name, id, nil)
		changes = append(changes, ch)
		return err
	}
	var errs []error
	for _, k := range a.cfg.State.APIKeys(res.Name) {
		errs = append(errs, del(events.ControlAPIKey, k.Name))
	}
	for _, d := range a.cfg.State.Deployments(res.Name) {
		errs = append(errs, del(events.ControlDeployment, d.Name))
	}
	for _, p := range a.cfg.State.FilterPolicies(res.Name)[1:] {
		errs = append(errs, del(events.ControlFilterPolicy, p.Name))
	}
	for _, b := range a.cfg.State.Blocklists(res.Name) {
		errs = append(errs, del(events.ControlBlocklist, b.Name))
	}
	if _, ok := a.cfg.State.Enforcement(res.Name); ok {
		errs = append(errs, del(events.ControlEnforcement, res.Name))
	}
	errs = append(errs, del(events.ControlResource, res.Name))
	au, err := a.audit(c, "delete", events.ControlResource, res.Name, res.Name)
	if err := errors.Join(append(errs, err)...); err != nil {
		return err
	}
	if err := a.publish(ctx, []string{res.Location}, append(changes, au)...); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// keysJSON is the body of listKeys and regenerateKey: a key's value
// appears only in the response that created it, null afterwards, because
// only its hash is kept.
type keysJSON struct {
	Key1 *string `json:"key1"`
	Key2 *string `json:"key2"`
}

func (k *keysJSON) set(slot, value string) {
	if slot == "key1" {
		k.Key1 = &value
	} else {
		k.Key2 = &value
	}
}

// newAPIKey returns a fresh key: 128 random bits as 32 hex digits, the
// shape of Azure's keys.
func newAPIKey() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// listKeys returns the values of key slots that have never held a key,
// creating those keys now; slots that hold a key show null, since only
// its hash is stored (regenerateKey replaces it).
func (a *API) listKeys(w http.ResponseWriter, r *http.Request, c caller) error {
	a.writes.Lock()
	defer a.writes.Unlock()
	res, err := a.resourceOf(r)
	if err != nil {
		return err
	}
	var out keysJSON
	var created []string
	for _, slot := range control.APIKeyNames {
		if slices.ContainsFunc(a.cfg.State.APIKeys(res.Name), func(k control.APIKey) bool { return k.Name == slot }) {
			continue
		}
		if err := a.issueKey(r.Context(), c, res, slot, "list_keys", &out); err != nil {
			return err
		}
		created = append(created, slot)
	}
	if len(created) == 0 {
		au, err := a.audit(c, "list_keys", events.ControlAPIKey, res.Name, "")
		if err != nil {
			return err
		}
		if err := a.publish(r.Context(), []string{res.Location}, au); err != nil {
			return err
		}
	}
	return writeJSON(w, http.StatusOK, out)
}

func (a *API) regenerateKey(w http.ResponseWriter, r *http.Request, c caller) error {
	var in struct {
		KeyName *string `json:"keyName"`
	}
	if err := apierr.Decode(w, r, a.cfg.MaxBody, &in); err != nil {
		return err
	}
	if in.KeyName == nil || !slices.Contains(control.APIKeyNames, *in.KeyName) {
		return apierr.Invalid("keyName", "keyName must be key1 or key2")
	}
	a.writes.Lock()
	defer a.writes.Unlock()
	res, err := a.resourceOf(r)
	if err != nil {
		return err
	}
	var out keysJSON
	if err := a.issueKey(r.Context(), c, res, *in.KeyName, "regenerate_key", &out); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, out)
}

// issueKey puts a new key in slot; the old key of the slot stops working
// as soon as the change is applied.
func (a *API) issueKey(ctx context.Context, c caller, res control.Resource, slot, action string, out *keysJSON) error {
	key := newAPIKey()
	spec := control.APIKey{Name: slot, Hash: control.HashAPIKey(key), CreatedAt: a.cfg.Now().UTC()}
	if err := a.commit(ctx, c, []string{res.Location}, action, events.ControlAPIKey, res.Name, slot, spec); err != nil {
		return err
	}
	out.set(slot, key)
	return nil
}
