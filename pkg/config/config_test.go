package config_test

import (
	"strings"
	"testing"
	"time"

	"github.com/terroir-ai/terroir/pkg/config"
)

func envOf(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestDefaultsAndOverrides(t *testing.T) {
	t.Parallel()
	e := config.New(envOf(map[string]string{
		"TERROIR_GEOS":             " EU , us ",
		"TERROIR_KAFKA_BROKERS":    "k:9092",
		"TERROIR_KAFKA_BROKERS_US": "kus:9092",
		"TERROIR_DRAIN_TIMEOUT":    "3s",
		"TERROIR_N":                "7",
		"TERROIR_LINGER":           "0",
	}))
	geos := e.Geos("TERROIR_GEOS", "eu")
	if strings.Join(geos, ",") != "eu,us" {
		t.Errorf("geos %v", geos)
	}
	per := e.PerGeo("TERROIR_KAFKA_BROKERS", geos, "default:1")
	if per["eu"] != "k:9092" || per["us"] != "kus:9092" {
		t.Errorf("per-geo %v", per)
	}
	if d := e.Duration("TERROIR_DRAIN_TIMEOUT", time.Second); d != 3*time.Second {
		t.Errorf("duration %v", d)
	}
	if d := e.Wait("TERROIR_LINGER", time.Second); d != 0 {
		t.Errorf("a wait set to 0 reads %v", d)
	}
	if n := e.Int("TERROIR_N", 1, 1, 10); n != 7 {
		t.Errorf("int %d", n)
	}
	if s := e.String("TERROIR_UNSET", "def"); s != "def" {
		t.Errorf("default %q", s)
	}
	if err := e.Err(); err != nil {
		t.Fatal(err)
	}
}

func TestEveryProblemIsReportedByName(t *testing.T) {
	t.Parallel()
	e := config.New(envOf(map[string]string{
		"TERROIR_GEOS":          "eu,mars",
		"TERROIR_DRAIN_TIMEOUT": "soon",
		"TERROIR_N":             "99",
		"TERROIR_LOG_FORMAT":    "xml",
		"TERROIR_LINGER":        "-5ms",
	}))
	e.Wait("TERROIR_LINGER", 0)
	e.Geos("TERROIR_GEOS", "eu")
	e.Duration("TERROIR_DRAIN_TIMEOUT", time.Second)
	e.Int("TERROIR_N", 1, 1, 10)
	e.OneOf("TERROIR_LOG_FORMAT", "json", "json", "console")
	err := e.Err()
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"TERROIR_GEOS", "mars", "TERROIR_DRAIN_TIMEOUT", "TERROIR_N", "TERROIR_LOG_FORMAT", "TERROIR_LINGER"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %s: %v", want, err)
		}
	}
}
