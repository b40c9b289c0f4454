package logging_test

import (
	"bytes"
	"strconv"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/terroir-ai/terroir/pkg/logging"
)

func TestContentFieldCarriesNoText(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	l := zap.New(zapcore.NewCore(enc, zapcore.AddSync(&buf), zap.DebugLevel))
	canary := "the-canary-sings-" + t.Name()
	l.Info("prompt received", logging.Content("prompt", []byte(canary)))
	out := buf.String()
	if strings.Contains(out, canary) || strings.Contains(out, "canary") {
		t.Fatalf("content leaked into the log: %s", out)
	}
	if !strings.Contains(out, `"bytes":`+strconv.Itoa(len(canary))) || !strings.Contains(out, `"sha256_12":"`) {
		t.Fatalf("length and hash missing: %s", out)
	}
}

func TestNewRejectsBadSettings(t *testing.T) {
	t.Parallel()
	if _, err := logging.New("svc", "xml", "info"); err == nil {
		t.Error("format xml accepted")
	}
	if _, err := logging.New("svc", "json", "loud"); err == nil {
		t.Error("level loud accepted")
	}
	if _, err := logging.New("svc", "console", "debug"); err != nil {
		t.Error(err)
	}
}
