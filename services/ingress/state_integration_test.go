package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/terroir-ai/terroir/pkg/bus"
	"github.com/terroir-ai/terroir/pkg/bus/bustest"
	"github.com/terroir-ai/terroir/pkg/daemon/daemontest"
	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/pkg/events/eventstest"
)

// TestSecondInstanceSeesTheSameState makes changes of every kind on one
// instance, then starts a second: materialised from the compacted control
// topics, it shows the same state, and a change made while it runs
// reaches it within a second.
func TestSecondInstanceSeesTheSameState(t *testing.T) {
	t.Parallel()
	a, s := startIngress(t)
	a.op("PUT", "/mgmt/resources/acme", resourceBody("eu"), http.StatusCreated)
	a.op("PUT", "/mgmt/resources/globex", resourceBody("us"), http.StatusCreated)
	a.op("PUT", "/mgmt/resources/gone", resourceBody("us"), http.StatusCreated)
	a.op("PUT", "/mgmt/resources/acme/blocklists/names", map[string]any{"properties": map[string]any{
		"blocklistItems": []any{map[string]any{"pattern": "Initech"}}}}, http.StatusCreated)
	a.op("PUT", "/mgmt/resources/acme/contentFilterPolicies/strict", map[string]any{"properties": map[string]any{
		"customBlocklists": []any{map[string]any{"blocklistName": "names", "source": "Completion"}}}}, http.StatusCreated)
	dep := deploymentBody("terroir-ngram", "DataZoneStandard")
	dep["properties"].(map[string]any)["raiPolicyName"] = "strict"
	a.op("PUT", "/mgmt/resources/acme/deployments/chat", dep, http.StatusCreated)
	a.op("PUT", "/mgmt/resources/globex/deployments/embed", deploymentBody("terroir-embed", "Standard"), http.StatusCreated)
	a.op("PUT", "/mgmt/policies/residency", map[string]any{"properties": map[string]any{"assignedTo": []string{"*"},
		"rules": map[string]any{"allowedSkus": []string{"Standard", "DataZoneStandard"}}}}, http.StatusCreated)
	a.op("PATCH", "/mgmt/resources/acme", map[string]any{"properties": map[string]any{"abuseMonitoring": map[string]any{"optOutApproved": true, "contentLogging": false}}}, http.StatusOK)
	key1 := a.op("POST", "/mgmt/resources/globex/listKeys", nil, http.StatusOK).body["key1"].(string)
	a.op("DELETE", "/mgmt/resources/gone", nil, http.StatusNoContent)

	b := startAnother(t, s)
	paths := []string{
		"/mgmt/resources", "/mgmt/resources/acme", "/mgmt/resources/acme/deployments", "/mgmt/resources/globex/deployments",
		"/mgmt/resources/acme/contentFilterPolicies", "/mgmt/resources/acme/blocklists", "/mgmt/policies",
		"/mgmt/audit?limit=1000",
	}
	for _, p := range paths {
		want, got := a.op("GET", p, nil, http.StatusOK), b.op("GET", p, nil, http.StatusOK)
		if !bytes.Equal(want.raw, got.raw) {
			t.Errorf("%s differs on the second instance:\nfirst:  %s\nsecond: %s", p, want.raw, got.raw)
		}
	}
	b.op("GET", "/mgmt/resources/gone", nil, http.StatusNotFound)
	if r := b.do("GET", "/mgmt/resources/globex", key1, nil); r.status != http.StatusOK {
		t.Fatalf("second instance refuses a key issued before it started: %d", r.status)
	}

	// Changes made while it runs, of each kind, reach it within a second.
	changed := deploymentBody("terroir-ngram", "Standard")
	changed["sku"].(map[string]any)["capacity"] = 77
	a.op("PUT", "/mgmt/resources/globex/deployments/chat", changed, http.StatusCreated)
	took := waitFor(t, time.Second, "new deployment on the second instance", func() bool {
		return b.do("GET", "/mgmt/resources/globex/deployments/chat", operatorToken, nil).status == http.StatusOK
	})
	t.Logf("a new deployment reached the running second instance in %v", took)
	a.op("DELETE", "/mgmt/policies/residency", nil, http.StatusNoContent)
	waitFor(t, time.Second, "policy deletion on the second instance", func() bool {
		return b.do("GET", "/mgmt/policies/residency", operatorToken, nil).status == http.StatusNotFound
	})
	a.op("DELETE", "/mgmt/resources/globex", nil, http.StatusNoContent)
	waitFor(t, time.Second, "resource deletion on the second instance", func() bool {
		return b.do("GET", "/mgmt/resources/globex", operatorToken, nil).status == http.StatusNotFound &&
			b.do("GET", "/mgmt/resources/globex", key1, nil).status == http.StatusUnauthorized
	})
	// And the second instance writes as well as it reads.
	b.op("PUT", "/mgmt/resources/initech", resourceBody("eu"), http.StatusCreated)
	waitFor(t, time.Second, "a write of the second instance on the first", func() bool {
		return a.do("GET", "/mgmt/resources/initech", operatorToken, nil).status == http.StatusOK
	})
}

// TestNoPlaintextAPIKeyAtRest issues and regenerates keys, then searches
// every file the broker wrote, every key and value in Redis and Redis's
// snapshot, and the metrics for them. The resource's contact address,
// which is stored in the clear, is found the same way: the search would
// see a key if one were there.
func TestNoPlaintextAPIKeyAtRest(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	c := bustest.New(t, kfake.DataDir(dataDir), kfake.SyncWrites())
	env := daemontest.EnvOn(t, c, map[string]string{"TERROIR_OPERATOR_TOKEN": operatorToken})
	s := daemontest.StartEnv(t, run, env)
	a := client{t: t, base: "http://" + env["TERROIR_HTTP_ADDR"]}
	marker := "contact-" + bustest.Namespace() + "@contoso.example"
	body := resourceBody("eu")
	body["properties"].(map[string]any)["contact"] = map[string]any{"email": marker}
	a.op("PUT", "/mgmt/resources/acme", body, http.StatusCreated)
	keys := a.op("POST", "/mgmt/resources/acme/listKeys", nil, http.StatusOK)
	regen := a.op("POST", "/mgmt/resources/acme/regenerateKey", map[string]string{"keyName": "key1"}, http.StatusOK)
	secrets := []string{keys.body["key1"].(string), keys.body["key2"].(string), regen.body["key1"].(string)}
	if r := a.do("GET", "/mgmt/resources/acme", secrets[2], nil); r.status != http.StatusOK {
		t.Fatalf("issued key does not work: %d", r.status)
	}

	// Redis: every key and value, and a snapshot on disk.
	rdb := redis.NewClient(&redis.Options{Addr: env["TERROIR_REDIS_ADDR"]})
	t.Cleanup(func() { _ = rdb.Close() })
	ctx := t.Context()
	if err := rdb.Set(ctx, "probe", marker, 0).Err(); err != nil {
		t.Fatal(err)
	}
	var redisDump bytes.Buffer
	iter := rdb.Scan(ctx, 0, "*", 0).Iterator()
	for iter.Next(ctx) {
		v, _ := rdb.Dump(ctx, iter.Val()).Result()
		redisDump.WriteString(iter.Val() + "\x00" + v + "\x00")
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Save(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	dir, err := rdb.ConfigGet(ctx, "dir").Result()
	if err != nil {
		t.Fatal(err)
	}
	snapshot, err := os.ReadFile(filepath.Join(dir["dir"], "dump.rdb"))
	if err != nil {
		t.Fatal(err)
	}
	_, metrics := s.Get(t, "/metrics")

	places := map[string][]byte{"redis keys and values": redisDump.Bytes(), "redis snapshot": snapshot, "metrics": []byte(metrics)}
	files := 0
	err = filepath.WalkDir(dataDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		raw, err := os.ReadFile(path)
		places["broker file "+strings.TrimPrefix(path, dataDir)] = raw
		files++
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	markerFound := map[string]bool{}
	for where, raw := range places {
		for _, k := range secrets {
			if bytes.Contains(raw, []byte(k)) {
				t.Errorf("plaintext API key found in %s", where)
			}
		}
		if bytes.Contains(raw, []byte(marker)) {
			markerFound[strings.Fields(where)[0]] = true
		}
	}
	if !markerFound["broker"] || !markerFound["redis"] {
		t.Fatalf("the search cannot see plaintext: marker found in %v of %d broker files", markerFound, files)
	}
}

// TestControlRecordsMatchTheirSchemaAndStayHome reads back every record
// the management API wrote: each validates against control.change.v1, a
// resource's objects are only on its home geography's control topic, and
// deployment policies are on every geography's.
func TestControlRecordsMatchTheirSchemaAndStayHome(t *testing.T) {
	t.Parallel()
	a, s := startIngress(t)
	a.op("PUT", "/mgmt/resources/acme", resourceBody("eu"), http.StatusCreated)
	a.op("PUT", "/mgmt/resources/globex", resourceBody("us"), http.StatusCreated)
	for _, r := range []string{"acme", "globex"} {
		a.op("POST", "/mgmt/resources/"+r+"/listKeys", nil, http.StatusOK)
		a.op("PUT", "/mgmt/resources/"+r+"/blocklists/b", map[string]any{"properties": map[string]any{
			"blocklistItems": []any{map[string]any{"pattern": "[0-9]{4}", "isRegex": true}}}}, http.StatusCreated)
		a.op("PUT", "/mgmt/resources/"+r+"/contentFilterPolicies/p", map[string]any{"properties": map[string]any{
			"customBlocklists": []any{map[string]any{"blocklistName": "b", "source": "Prompt"}}}}, http.StatusCreated)
		a.op("PUT", "/mgmt/resources/"+r+"/deployments/d", deploymentBody("terroir-ngram", "Standard"), http.StatusCreated)
		a.op("DELETE", "/mgmt/resources/"+r+"/deployments/d", nil, http.StatusNoContent)
	}
	a.op("PUT", "/mgmt/policies/all", map[string]any{"properties": map[string]any{"assignedTo": []string{"*"}}}, http.StatusCreated)
	a.op("DELETE", "/mgmt/resources/globex", nil, http.StatusNoContent)

	_, sch := eventstest.Load(t, events.TypeControlChange)
	home := map[string]string{"acme": "eu", "globex": "us"}
	policyGeos := map[string]bool{}
	for _, geo := range []string{"eu", "us"} {
		topic := bus.TopicName(s.Env["TERROIR_KAFKA_NAMESPACE"], geo, bus.StreamControl)
		recs := readTopic(t, strings.Split(s.Env["TERROIR_KAFKA_BROKERS"], ","), topic)
		if len(recs) == 0 {
			t.Fatalf("%s is empty", topic)
		}
		for _, r := range recs {
			if err := eventstest.Validate(sch, r.Value); err != nil {
				t.Errorf("%s offset %d does not match control.change.v1: %v", topic, r.Offset, err)
			}
			var c events.ControlChange
			if err := json.Unmarshal(r.Value, &c); err != nil {
				t.Fatal(err)
			}
			if c.Resource != "" && home[c.Resource] != geo {
				t.Errorf("%s/%s of resource %s (home %s) is on the %s control topic", c.Kind, c.ID, c.Resource, home[c.Resource], geo)
			}
			if c.Kind == events.ControlDeploymentPolicy {
				policyGeos[geo] = true
			}
		}
	}
	if !policyGeos["eu"] || !policyGeos["us"] {
		t.Errorf("the deployment policy is not on every geography: %v", policyGeos)
	}
}

// readTopic reads every record of topic, from its start to its current
// end, with a client of its own.
func readTopic(t *testing.T, brokers []string, topic string) []*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	want := int64(0)
	ends.Each(func(o kadm.ListedOffset) { want += o.Offset })
	var out []*kgo.Record
	for int64(len(out)) < want {
		f := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("read %d of %d records of %s: %v", len(out), want, topic, err)
		}
		out = append(out, f.Records()...)
	}
	return out
}
