package main

import (
	"cmp"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/terroir-ai/terroir/services/ingress/api"
	"github.com/terroir-ai/terroir/services/ingress/mgmt"
)

// access is who may call a route.
type access int

const (
	operatorOnly  access = iota // management: the operator token only
	ownOrOperator               // management: the operator or an app key of the resource itself
	appKey                      // app API: an API key of the resource that owns the deployment
)

// authzRow is one route of the matrix: who may call it, and what a
// successful call sends.
type authzRow struct {
	access access
	body   any
	// deployment fills {deployment} and the body's model.
	deployment string
	// upload sends a multipart file upload instead of body.
	upload bool
	// ownStatus is what the resource's own key gets (default 200);
	// otherStatus what another resource's key gets, when not the
	// default of its access.
	ownStatus, otherStatus int
}

// authzMatrix has a row for every route ingress serves; a route without
// a row fails TestAuthorizationMatrix. {name} is the calling resource's
// own name, {item} a child it owns, {policy} a deployment policy.
func authzMatrix() map[string]authzRow {
	chat := map[string]any{"model": "chat", "messages": []any{map[string]any{"role": "user", "content": "hello"}}}
	completion := map[string]any{"model": "chat", "prompt": "hello"}
	embedding := map[string]any{"model": "embed", "input": "hello"}
	filterPolicy := map[string]any{"properties": map[string]any{"contentFilters": []any{
		map[string]any{"name": "hate", "source": "Prompt", "severityThreshold": "Low"}}}}
	blocklist := map[string]any{"properties": map[string]any{"blocklistItems": []any{map[string]any{"pattern": "Initech"}}}}
	rows := map[string]authzRow{
		"GET /mgmt/catalog":                                          {access: operatorOnly},
		"GET /mgmt/audit":                                            {access: operatorOnly},
		"GET /mgmt/resources":                                        {access: operatorOnly},
		"GET /mgmt/resources/{name}":                                 {access: ownOrOperator},
		"PUT /mgmt/resources/{name}":                                 {access: operatorOnly, body: resourceBody("eu")},
		"PATCH /mgmt/resources/{name}":                               {access: operatorOnly, body: map[string]any{"properties": map[string]any{"contact": map[string]any{"name": "Sec"}}}},
		"DELETE /mgmt/resources/{name}":                              {access: operatorOnly},
		"POST /mgmt/resources/{name}/listKeys":                       {access: operatorOnly},
		"POST /mgmt/resources/{name}/regenerateKey":                  {access: operatorOnly, body: map[string]any{"keyName": "key2"}},
		"GET /mgmt/resources/{name}/deployments":                     {access: operatorOnly},
		"GET /mgmt/resources/{name}/deployments/{item}":              {access: operatorOnly},
		"PUT /mgmt/resources/{name}/deployments/{item}":              {access: operatorOnly, body: deploymentBody("terroir-ngram", "Standard")},
		"DELETE /mgmt/resources/{name}/deployments/{item}":           {access: operatorOnly},
		"GET /mgmt/resources/{name}/contentFilterPolicies":           {access: operatorOnly},
		"GET /mgmt/resources/{name}/contentFilterPolicies/{item}":    {access: operatorOnly},
		"PUT /mgmt/resources/{name}/contentFilterPolicies/{item}":    {access: operatorOnly, body: filterPolicy},
		"DELETE /mgmt/resources/{name}/contentFilterPolicies/{item}": {access: operatorOnly},
		"GET /mgmt/resources/{name}/blocklists":                      {access: operatorOnly},
		"GET /mgmt/resources/{name}/blocklists/{item}":               {access: operatorOnly},
		"PUT /mgmt/resources/{name}/blocklists/{item}":               {access: operatorOnly, body: blocklist},
		"DELETE /mgmt/resources/{name}/blocklists/{item}":            {access: operatorOnly},
		"GET /mgmt/policies":                                         {access: operatorOnly},
		"GET /mgmt/policies/{name}":                                  {access: operatorOnly},
		"PUT /mgmt/policies/{name}":                                  {access: operatorOnly, body: map[string]any{"properties": map[string]any{"assignedTo": []string{"nobody-else"}}}},
		"DELETE /mgmt/policies/{name}":                               {access: operatorOnly},

		"GET /v1/models":                                         {access: appKey},
		"GET /openai/v1/models":                                  {access: appKey},
		"POST /v1/chat/completions":                              {access: appKey, body: chat},
		"POST /v1/completions":                                   {access: appKey, body: completion},
		"POST /v1/embeddings":                                    {access: appKey, body: embedding},
		"POST /openai/v1/chat/completions":                       {access: appKey, body: chat},
		"POST /openai/v1/completions":                            {access: appKey, body: completion},
		"POST /openai/v1/embeddings":                             {access: appKey, body: embedding},
		"POST /openai/deployments/{deployment}/chat/completions": {access: appKey, body: chat, deployment: "chat"},
		"POST /openai/deployments/{deployment}/completions":      {access: appKey, body: completion, deployment: "chat"},
		"POST /openai/deployments/{deployment}/embeddings":       {access: appKey, body: embedding, deployment: "embed"},
	}
	// The Files API: {file_id} is a file of the calling resource, which
	// another resource's key cannot find.
	for _, root := range []string{"/v1", "/openai", "/openai/v1"} {
		upload := authzRow{access: appKey, upload: true}
		if root == "/openai" {
			upload.ownStatus = http.StatusCreated
		}
		rows["POST "+root+"/files"] = upload
		rows["GET "+root+"/files"] = authzRow{access: appKey}
		for _, r := range []string{"GET " + root + "/files/{file_id}", "GET " + root + "/files/{file_id}/content", "DELETE " + root + "/files/{file_id}"} {
			rows[r] = authzRow{access: appKey, otherStatus: http.StatusNotFound}
		}
	}
	// The Batch API: {batch_id} is a batch of the calling resource, made
	// from {file_id}; another resource's key finds neither. Azure's
	// deployment paths (the Node SDK's with a deployment option) answer
	// like /openai.
	for _, root := range []string{"/v1", "/openai", "/openai/v1", "/openai/deployments/{deployment}"} {
		create := map[string]any{"input_file_id": "{file_id}", "endpoint": "/v1/chat/completions", "completion_window": "24h"}
		rows["POST "+root+"/batches"] = authzRow{access: appKey, body: create, deployment: "chat", otherStatus: http.StatusNotFound}
		rows["GET "+root+"/batches"] = authzRow{access: appKey, deployment: "chat"}
		rows["GET "+root+"/batches/{batch_id}"] = authzRow{access: appKey, deployment: "chat", otherStatus: http.StatusNotFound}
		rows["POST "+root+"/batches/{batch_id}/cancel"] = authzRow{access: appKey, deployment: "chat", otherStatus: http.StatusNotFound}
	}
	return rows
}

// TestAuthorizationMatrix calls every route ingress serves, as listed by
// the route tables themselves, with the resource's own key, another
// resource's key, no key, a key nobody issued and the operator token. Each
// route runs against resources of its own, so a destructive call by the
// operator (last) cannot change another route's answers.
func TestAuthorizationMatrix(t *testing.T) {
	t.Parallel()
	a, s, _, _ := appSetup(t, map[string]string{"TERROIR_MAX_BODY_BYTES": "65536"})
	startResponder(t, s) // a second group member answers too; either is fine
	matrix := authzMatrix()
	routes := append(mgmt.Routes(), api.Routes()...)
	served := map[string]bool{}
	for _, r := range routes {
		served[r] = true
		if _, ok := matrix[r]; !ok {
			t.Errorf("route %q has no row in the authorization matrix: add one saying who may call it", r)
		}
	}
	for r := range matrix {
		if !served[r] {
			t.Errorf("the matrix has a row for %q, which ingress does not serve", r)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	const wrongKey = "0123456789abcdef0123456789abcdef"
	for i, route := range routes {
		row := matrix[route]
		method, pattern, _ := strings.Cut(route, " ")
		// fresh resources: "own" with a deployment, a policy and a
		// blocklist named "item", and "other" with nothing
		own, other := "own"+strconv.Itoa(i), "other"+strconv.Itoa(i)
		a.op("PUT", "/mgmt/resources/"+own, resourceBody("eu"), http.StatusCreated)
		a.op("PUT", "/mgmt/resources/"+other, resourceBody("eu"), http.StatusCreated)
		for _, d := range []struct{ name, model string }{{"chat", "terroir-ngram"}, {"embed", "terroir-embed"}, {"item", "terroir-ngram"}} {
			a.op("PUT", "/mgmt/resources/"+own+"/deployments/"+d.name, deploymentBody(d.model, "Standard"), http.StatusCreated)
		}
		a.op("PUT", "/mgmt/resources/"+own+"/contentFilterPolicies/item", matrix["PUT /mgmt/resources/{name}/contentFilterPolicies/{item}"].body, http.StatusCreated)
		a.op("PUT", "/mgmt/resources/"+own+"/blocklists/item", matrix["PUT /mgmt/resources/{name}/blocklists/{item}"].body, http.StatusCreated)
		a.op("PUT", "/mgmt/policies/"+own, matrix["PUT /mgmt/policies/{name}"].body, http.StatusCreated)
		ownKey := a.op("POST", "/mgmt/resources/"+own+"/listKeys", nil, http.StatusOK).body["key1"].(string)
		otherKey := a.op("POST", "/mgmt/resources/"+other+"/listKeys", nil, http.StatusOK).body["key1"].(string)

		fileID := a.upload("/v1/files", ownKey, "batch", "chat.jsonl", "{}\n", http.StatusOK).body["id"].(string)
		var batchID string
		if strings.Contains(pattern, "/batches") {
			batchID = a.do("POST", "/v1/batches", ownKey, map[string]any{"input_file_id": fileID, "endpoint": "/v1/chat/completions",
				"completion_window": "24h"}).body["id"].(string)
		}
		path := strings.NewReplacer("{name}", own, "{item}", "item", "{deployment}", row.deployment, "{file_id}", fileID,
			"{batch_id}", batchID).Replace(pattern)
		if strings.HasPrefix(path, "/openai/") {
			path += "?api-version=2024-10-21"
		}
		var body any = row.body
		if body == nil && method != "GET" && method != "DELETE" {
			body = map[string]any{}
		}
		if body != nil {
			raw, err := json.Marshal(body)
			if err != nil {
				t.Fatal(err)
			}
			body = strings.ReplaceAll(string(raw), "{file_id}", fileID)
		}
		call := func(who, cred string) reply {
			var r reply
			if row.upload {
				ct, mp := multipartBody(t, formField{"file", "chat.jsonl", "{}\n"}, formField{name: "purpose", value: "batch"})
				r = a.send(method, path, cred, ct, mp, true)
			} else {
				r = a.do(method, path, cred, body)
			}
			if r.status == http.StatusInternalServerError || r.body["error"] == nil && r.status >= 400 {
				t.Errorf("%s as %s = %d, not an OpenAI-shaped refusal: %s", route, who, r.status, r.raw)
			}
			return r
		}
		expect := func(who string, r reply, want int, code string) {
			t.Helper()
			if r.status != want || code != "" && r.errCode() != code {
				t.Errorf("%s as %s = %d %s, want %d %s", route, who, r.status, r.raw, want, code)
			}
		}
		// no key and a key nobody issued: 401, whatever the route
		expect("no key", call("no key", ""), http.StatusUnauthorized, "")
		if r := call("a wrong key", wrongKey); r.status != http.StatusUnauthorized || r.errField("type") == nil && r.errCode() == nil {
			t.Errorf("%s with a wrong key = %d %s, want 401", route, r.status, r.raw)
		}
		otherR, ownR := call("another resource's key", otherKey), call("its own key", ownKey)
		operatorR := call("the operator", operatorToken)
		switch row.access {
		case operatorOnly:
			expect("another resource's key", otherR, http.StatusForbidden, "OperatorTokenRequired")
			expect("its own key", ownR, http.StatusForbidden, "OperatorTokenRequired")
			if operatorR.status < 200 || operatorR.status > 299 {
				t.Errorf("%s as the operator = %d %s, want success", route, operatorR.status, operatorR.raw)
			}
		case ownOrOperator:
			expect("another resource's key", otherR, http.StatusNotFound, "ResourceNotFound")
			expect("its own key", ownR, http.StatusOK, "")
			expect("the operator", operatorR, http.StatusOK, "")
		case appKey:
			expect("its own key", ownR, cmp.Or(row.ownStatus, http.StatusOK), "")
			// the operator token is not an API key of any resource
			expect("the operator", operatorR, http.StatusUnauthorized, "")
			switch {
			case row.otherStatus != 0:
				expect("another resource's key", otherR, row.otherStatus, "")
			case method == "GET" && strings.Contains(pattern, "/files"):
				// another resource lists its own files, none of these
				expect("another resource's key", otherR, http.StatusOK, "")
				if strings.Contains(string(otherR.raw), fileID) || !strings.Contains(string(ownR.raw), fileID) {
					t.Errorf("%s: own key lists %s, another resource's key lists %s", route, ownR.raw, otherR.raw)
				}
			case method == "GET" && strings.HasSuffix(pattern, "/batches"):
				// another resource lists its own batches, none of these
				expect("another resource's key", otherR, http.StatusOK, "")
				if strings.Contains(string(otherR.raw), batchID) || !strings.Contains(string(ownR.raw), batchID) {
					t.Errorf("%s: own key lists %s, another resource's key lists %s", route, ownR.raw, otherR.raw)
				}
			case row.upload:
				// another resource uploads a file of its own
				expect("another resource's key", otherR, cmp.Or(row.ownStatus, http.StatusOK), "")
			case method == "GET":
				// another resource lists its own deployments, none of these
				expect("another resource's key", otherR, http.StatusOK, "")
				if strings.Contains(string(otherR.raw), `"chat"`) || !strings.Contains(string(ownR.raw), `"chat"`) {
					t.Errorf("%s: own key lists %s, another resource's key lists %s", route, ownR.raw, otherR.raw)
				}
			default:
				// another resource has no such deployment
				expect("another resource's key", otherR, http.StatusNotFound, "DeploymentNotFound")
			}
		}
	}
}
