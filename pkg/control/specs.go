package control

import (
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"time"

	"github.com/terroir-ai/terroir/pkg/events"
)

// The specs below are what control changes carry in their Spec, one per
// kind. They are the control plane's own shapes; the management API
// renders them in Azure's shapes. None of them holds a secret.

// Resource is a tenant: everything a customer owns belongs to one, and
// its data stays in its home geography (Location).
type Resource struct {
	Name string `json:"name"`
	// Location is the home geography ("eu"). It never changes.
	Location string `json:"location"`
	// DataZone is the data zone of Location, empty where it has none.
	DataZone string  `json:"dataZone,omitempty"`
	Contact  Contact `json:"contact"`
	// OptOutApproved records that the operator approved this resource's
	// application to opt out of abuse-monitoring content logging.
	OptOutApproved bool `json:"optOutApproved"`
	// ContentLogging is whether prompts and outputs are kept for abuse
	// monitoring; it can be false only when OptOutApproved.
	ContentLogging bool      `json:"contentLogging"`
	CreatedAt      time.Time `json:"createdAt"`
	// BatchDrops is the resource's batch drop location; nil (a record
	// written before drops existed) means the default (see Drops).
	BatchDrops *BatchDrops `json:"batchDrops,omitempty"`
}

// Contact is who receives publisher reports about a resource.
type Contact struct {
	Name  string `json:"name,omitempty"`
	Email string `json:"email,omitempty"`
}

// APIKeyNames are the two key slots of every resource; two, so a key can
// be rotated without downtime.
var APIKeyNames = []string{"key1", "key2"}

// APIKey is one key slot of a resource. Only the key's hash is kept.
type APIKey struct {
	Name string `json:"name"`
	// Hash is "sha256:" and the hex SHA-256 of the key. Keys are 128-bit
	// random values, so a fast hash suffices: there is nothing to guess.
	Hash      string    `json:"hash"`
	CreatedAt time.Time `json:"createdAt"`
}

// HashAPIKey returns the stored form of an API key.
func HashAPIKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// Deployment makes a catalog model callable under a name within a
// resource, with a SKU that decides where it is processed.
type Deployment struct {
	Name         string     `json:"name"`
	Resource     string     `json:"resource"`
	Model        string     `json:"model"`
	ModelVersion string     `json:"modelVersion"`
	SKU          events.SKU `json:"sku"`
	// Capacity is in thousands of tokens per minute.
	Capacity int `json:"capacity"`
	// FilterPolicy names the resource's content-filter policy applied to
	// the deployment's prompts and completions.
	FilterPolicy string    `json:"filterPolicy"`
	CreatedAt    time.Time `json:"createdAt"`
}

// Categories are the harm categories content filtering classifies.
var Categories = []string{"hate", "sexual", "violence", "self_harm"}

// Threshold is the lowest severity a filter blocks; ThresholdOff blocks
// nothing (the category is still annotated).
type Threshold string

// Thresholds, from strictest to most permissive.
const (
	ThresholdLow    Threshold = "low"
	ThresholdMedium Threshold = "medium"
	ThresholdHigh   Threshold = "high"
	ThresholdOff    Threshold = "off"
)

// Blocks reports whether a finding of severity s is blocked under t.
func (t Threshold) Blocks(s events.Severity) bool {
	rank := map[events.Severity]int{events.SeverityLow: 1, events.SeverityMedium: 2, events.SeverityHigh: 3}
	limit := map[Threshold]int{ThresholdLow: 1, ThresholdMedium: 2, ThresholdHigh: 3}[t]
	return limit > 0 && rank[s] >= limit
}

// DefaultFilterPolicyName is the policy every resource has without
// creating it; it blocks medium severity and above in both directions,
// detects jailbreak attempts, and asks the guard model where one is
// configured, failing open.
const DefaultFilterPolicyName = "default"

// FilterPolicy is a content-filter policy of a resource.
type FilterPolicy struct {
	Name       string      `json:"name"`
	Resource   string      `json:"resource"`
	Prompt     FilterRules `json:"prompt"`
	Completion FilterRules `json:"completion"`
}

// FilterRules are what a policy blocks in one direction.
type FilterRules struct {
	// Thresholds has one entry per category of Categories.
	Thresholds map[string]Threshold `json:"thresholds"`
	// Jailbreak blocks prompt-injection attempts (prompts only).
	Jailbreak bool `json:"jailbreak"`
	// Profanity blocks profanity.
	Profanity bool `json:"profanity"`
	// Blocklists names the resource's blocklists that block.
	Blocklists []string `json:"blocklists,omitempty"`
	// Guard says whether the guard-model stage rates this direction and
	// what a failure of it means. Its zero value is the default: rated
	// wherever contentsafety has a guard model configured, failing open.
	Guard GuardRules `json:"guard,omitzero"`
}

// GuardFailure is what happens to a text when the guard model could not
// rate it (unreachable, too slow, an answer that is not a verdict).
type GuardFailure string

// Guard failure modes.
const (
	// GuardFailOpen lets the built-in rules decide alone; the failure is
	// counted. It is the default: the rules always run, so a guard outage
	// lowers the filter to the built-in level instead of stopping the
	// deployment.
	GuardFailOpen GuardFailure = "open"
	// GuardFailClosed blocks the text as filtered.
	GuardFailClosed GuardFailure = "closed"
)

// GuardFailures lists the failure modes.
var GuardFailures = []GuardFailure{GuardFailOpen, GuardFailClosed}

// GuardRules are a policy's guard-model settings for one direction. They
// only matter where contentsafety has a guard model configured; without
// one the rules decide alone whatever these say.
type GuardRules struct {
	// Off skips the guard model for this direction.
	Off bool `json:"off,omitempty"`
	// OnFailure is GuardFailOpen or GuardFailClosed; empty means
	// GuardFailOpen.
	OnFailure GuardFailure `json:"onFailure,omitempty"`
}

// Applies reports whether the guard model rates this direction.
func (g GuardRules) Applies() bool { return !g.Off }

// FailsClosed reports whether a guard failure blocks the text.
func (g GuardRules) FailsClosed() bool { return g.OnFailure == GuardFailClosed }

// Failure is the failure mode in effect, GuardFailOpen when unset.
func (g GuardRules) Failure() GuardFailure {
	if g.OnFailure == "" {
		return GuardFailOpen
	}
	return g.OnFailure
}

// DefaultFilterPolicy returns resource's built-in default policy.
func DefaultFilterPolicy(resource string) FilterPolicy {
	rules := func(jailbreak bool) FilterRules {
		r := FilterRules{Thresholds: map[string]Threshold{}, Jailbreak: jailbreak}
		for _, c := range Categories {
			r.Thresholds[c] = ThresholdMedium
		}
		return r
	}
	return FilterPolicy{Name: DefaultFilterPolicyName, Resource: resource, Prompt: rules(true), Completion: rules(false)}
}

// UsesBlocklist reports whether p applies the named blocklist.
func (p FilterPolicy) UsesBlocklist(name string) bool {
	return slices.Contains(p.Prompt.Blocklists, name) || slices.Contains(p.Completion.Blocklists, name)
}

// Blocklist is a resource's custom list of blocked terms.
type Blocklist struct {
	Name        string          `json:"name"`
	Resource    string          `json:"resource"`
	Description string          `json:"description,omitempty"`
	Items       []BlocklistItem `json:"items"`
}

// BlocklistItem is a literal (matched case-insensitively after
// normalisation) or an RE2 regular expression.
type BlocklistItem struct {
	ID      string `json:"id"`
	Pattern string `json:"pattern"`
	IsRegex bool   `json:"isRegex"`
}

// DeploymentPolicy restricts which deployments the resources it is
// assigned to may create. An empty rule list does not restrict.
type DeploymentPolicy struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	// AssignedTo lists resource names; "*" assigns the policy to all.
	AssignedTo        []string     `json:"assignedTo"`
	AllowedModels     []string     `json:"allowedModels,omitempty"`
	AllowedPublishers []string     `json:"allowedPublishers,omitempty"`
	CuratedOnly       bool         `json:"curatedOnly"`
	AllowedSKUs       []events.SKU `json:"allowedSkus,omitempty"`
}

// AppliesTo reports whether the policy is assigned to resource.
func (p DeploymentPolicy) AppliesTo(resource string) bool {
	return slices.Contains(p.AssignedTo, "*") || slices.Contains(p.AssignedTo, resource)
}

// Enforcement is an action against a resource decided in abuse review.
type Enforcement struct {
	Resource string `json:"resource"`
	// Action is "none", "throttle" or "suspend".
	Action string `json:"action"`
	// Case is the review case that led to it.
	Case string    `json:"case,omitempty"`
	At   time.Time `json:"at"`
}

// AuditRecord is one control-plane change as the audit trail keeps it:
// who, what and when; never a secret nor a changed value.
type AuditRecord struct {
	ID string `json:"id"`
	// Action is create, update, delete, list_keys or regenerate_key.
	Action   string             `json:"action"`
	Kind     events.ControlKind `json:"kind"`
	Object   string             `json:"object"`
	Resource string             `json:"resource,omitempty"`
	Actor    string             `json:"actor"`
	// Source is the caller's network address.
	Source    string    `json:"source,omitempty"`
	RequestID string    `json:"requestId,omitempty"`
	At        time.Time `json:"at"`
	// Fields names the top-level fields an update changed.
	Fields []string `json:"fields,omitempty"`
}
