package daemon

import (
	"errors"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/terroir-ai/terroir/pkg/config"
	"github.com/terroir-ai/terroir/pkg/tlsfiles"
)

// redisOptions reads how each geography's Redis is reached. The address
// (TERROIR_REDIS_ADDR) is host:port or a redis:// or rediss:// URL, which
// may carry a user, password and database; TERROIR_REDIS_USERNAME and
// TERROIR_REDIS_PASSWORD (or TERROIR_REDIS_PASSWORD_FILE) set the
// credentials, TERROIR_REDIS_TLS* the client side of TLS (see
// tlsfiles.ClientsFromEnv; a rediss:// URL turns TLS on by itself). Each
// variable has its per-geography form too.
func redisOptions(env *config.Env, geos []string) map[string]*redis.Options {
	addrs := env.PerGeo("TERROIR_REDIS_ADDR", geos, "127.0.0.1:6390")
	users := env.PerGeo("TERROIR_REDIS_USERNAME", geos, "")
	passwords := env.SecretPerGeo("TERROIR_REDIS_PASSWORD", geos)
	tlsConfigs := tlsfiles.ClientsFromEnv(env, "TERROIR_REDIS", geos)
	out := make(map[string]*redis.Options, len(geos))
	for _, g := range geos {
		addr := addrs[g]
		o := &redis.Options{Addr: addr}
		if strings.Contains(addr, "://") {
			var err error
			if o, err = redis.ParseURL(addr); err != nil {
				// The URL may hold a password: the error names the
				// variable, not its value.
				env.Fail("TERROIR_REDIS_ADDR_"+strings.ToUpper(g), errors.New("not a redis:// or rediss:// URL"))
				o = &redis.Options{}
			}
		}
		if users[g] != "" {
			o.Username = users[g]
		}
		if passwords[g] != "" {
			o.Password = passwords[g]
		}
		if t := tlsConfigs[g]; t != nil {
			if o.TLSConfig != nil && t.ServerName == "" {
				t.ServerName = o.TLSConfig.ServerName
			}
			o.TLSConfig = t
		} else if o.TLSConfig != nil {
			o.TLSConfig.MinVersion = tlsfiles.MinVersion
		}
		out[g] = o
	}
	return out
}
