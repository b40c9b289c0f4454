package bus

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
)

// permanentError marks a failure that retrying cannot fix.
type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

// Permanent marks err as not worth retrying: the consumer sends the record
// to the dead-letter topic at once. Unmarked errors are retried until they
// heal, so mark only what can never succeed.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err}
}

// IsPermanent reports whether err was marked with Permanent.
func IsPermanent(err error) bool {
	var p permanentError
	return errors.As(err, &p)
}

type metrics struct {
	produced       *prometheus.CounterVec
	produceErrors  *prometheus.CounterVec
	produceSeconds *prometheus.HistogramVec
	handled        *prometheus.CounterVec
	handleErrors   *prometheus.CounterVec
	deadLettered   *prometheus.CounterVec
	handleSeconds  *prometheus.HistogramVec
	// pausedPartitions counts partitions paused while a record retries:
	// above zero for long means an outage, or a handler failing what it
	// should mark Permanent.
	pausedPartitions *prometheus.GaugeVec
	// expired counts requests skipped after their caller stopped waiting.
	expired *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	labels := []string{"geo", "stream"}
	m := &metrics{
		produced:      prometheus.NewCounterVec(prometheus.CounterOpts{Name: "terroir_bus_records_produced_total", Help: "Records produced, by geography and stream."}, labels),
		produceErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "terroir_bus_produce_errors_total", Help: "Records that failed to produce."}, labels),
		produceSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "terroir_bus_produce_seconds", Help: "Time to an acknowledged produce.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16)}, labels),
		handled:      prometheus.NewCounterVec(prometheus.CounterOpts{Name: "terroir_bus_records_handled_total", Help: "Records handled successfully, by group."}, append(labels, "group")),
		handleErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "terroir_bus_handle_errors_total", Help: "Failed handling attempts, by group."}, append(labels, "group")),
		deadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "terroir_bus_dead_lettered_total", Help: "Records sent to the dead-letter topic, by group."}, append(labels, "group")),
		handleSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "terroir_bus_handle_seconds", Help: "Time to handle a record, retries included.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18)}, append(labels, "group")),
		expired:          prometheus.NewCounterVec(prometheus.CounterOpts{Name: "terroir_bus_expired_total", Help: "Requests skipped because their caller had stopped waiting (Meta.ReplyBy passed)."}, labels),
		pausedPartitions: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "terroir_bus_paused_partitions", Help: "Partitions paused while a failing record is retried, by group."}, []string{"group"}),
	}
	if reg != nil {
		reg.MustRegister(m.produced, m.produceErrors, m.produceSeconds, m.handled, m.handleErrors, m.deadLettered, m.handleSeconds, m.pausedPartitions, m.expired)
	}
	return m
}

// kzapLogger routes franz-go's client logs to zap, one level quieter:
// client chatter at info is debug for Terroir.
type kzapLogger struct{ l *zap.Logger }

func (k kzapLogger) Level() kgo.LogLevel {
	if k.l.Core().Enabled(zap.DebugLevel) {
		return kgo.LogLevelInfo
	}
	return kgo.LogLevelWarn
}

func (k kzapLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	fields := make([]zap.Field, 0, len(keyvals)/2)
	for i := 0; i+1 < len(keyvals); i += 2 {
		key, _ := keyvals[i].(string)
		fields = append(fields, zap.Any(key, keyvals[i+1]))
	}
	switch level {
	case kgo.LogLevelError:
		k.l.Error(msg, fields...)
	case kgo.LogLevelWarn:
		k.l.Warn(msg, fields...)
	default:
		k.l.Debug(msg, fields...)
	}
}
