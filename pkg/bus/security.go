package bus

import (
	"crypto/tls"
	"errors"
	"fmt"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/terroir-ai/terroir/pkg/config"
	"github.com/terroir-ai/terroir/pkg/tlsfiles"
)

// SASL mechanisms a geography's cluster may ask for.
const (
	SASLPlain       = "PLAIN"
	SASLScramSHA256 = "SCRAM-SHA-256"
	SASLScramSHA512 = "SCRAM-SHA-512"
)

// Security is how the clients of one geography reach its cluster: over
// TLS when TLS is set, authenticated with SASL when Mechanism is set.
type Security struct {
	// TLS, when set, is the client side of every connection to the
	// cluster.
	TLS *tls.Config
	// Mechanism is SASLPlain, SASLScramSHA256 or SASLScramSHA512; empty,
	// the clients do not authenticate.
	Mechanism string
	// User and Password are the SASL credentials.
	User, Password string
}

// opts returns the franz-go options of s.
func (s Security) opts() ([]kgo.Opt, error) {
	var opts []kgo.Opt
	if s.TLS != nil {
		opts = append(opts, kgo.DialTLSConfig(s.TLS.Clone()))
	}
	if s.Mechanism == "" {
		return opts, nil
	}
	if s.User == "" || s.Password == "" {
		return nil, fmt.Errorf("SASL %s needs a user and a password", s.Mechanism)
	}
	switch s.Mechanism {
	case SASLPlain:
		if s.TLS == nil {
			// PLAIN sends the password as it is.
			return nil, errors.New("SASL PLAIN without TLS would send the password in clear")
		}
		opts = append(opts, kgo.SASL(plain.Auth{User: s.User, Pass: s.Password}.AsMechanism()))
	case SASLScramSHA256:
		opts = append(opts, kgo.SASL(scram.Auth{User: s.User, Pass: s.Password}.AsSha256Mechanism()))
	case SASLScramSHA512:
		opts = append(opts, kgo.SASL(scram.Auth{User: s.User, Pass: s.Password}.AsSha512Mechanism()))
	default:
		return nil, fmt.Errorf("unknown SASL mechanism %q (want %s, %s or %s)", s.Mechanism, SASLPlain, SASLScramSHA256, SASLScramSHA512)
	}
	return opts, nil
}

// SecurityFromEnv reads how each geography's cluster is reached:
// TLS from TERROIR_KAFKA_TLS, TERROIR_KAFKA_TLS_CA_FILE,
// TERROIR_KAFKA_TLS_CERT_FILE, TERROIR_KAFKA_TLS_KEY_FILE and
// TERROIR_KAFKA_TLS_SERVER_NAME (see tlsfiles.ClientsFromEnv), SASL from
// TERROIR_KAFKA_SASL_MECHANISM, TERROIR_KAFKA_SASL_USER and
// TERROIR_KAFKA_SASL_PASSWORD (or TERROIR_KAFKA_SASL_PASSWORD_FILE), each
// also in its per-geography form (TERROIR_KAFKA_SASL_USER_EU). Problems
// are recorded on env, naming the variable.
func SecurityFromEnv(env *config.Env, geos []string) map[string]Security {
	tlsConfigs := tlsfiles.ClientsFromEnv(env, "TERROIR_KAFKA", geos)
	mechanism := env.PerGeo("TERROIR_KAFKA_SASL_MECHANISM", geos, "")
	user := env.PerGeo("TERROIR_KAFKA_SASL_USER", geos, "")
	password := env.SecretPerGeo("TERROIR_KAFKA_SASL_PASSWORD", geos)
	out := make(map[string]Security, len(geos))
	for _, g := range geos {
		s := Security{TLS: tlsConfigs[g], Mechanism: strings.ToUpper(mechanism[g]), User: user[g], Password: password[g]}
		if _, err := s.opts(); err != nil {
			env.Fail("TERROIR_KAFKA_SASL_MECHANISM_"+strings.ToUpper(g), err)
		}
		out[g] = s
	}
	return out
}
