package compose

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
)

// Secret files of the compose stack, relative to the repository root. They
// are never committed and never sent to an image build.
const (
	// keyringSecretFile is the keyring every service mounts.
	keyringSecretFile = "deployments/secrets/keyring.json"
	// operatorTokenSecretFile is the management API's operator token,
	// mounted by ingress.
	operatorTokenSecretFile = "deployments/secrets/operator-token"
)

// serviceSpec is what the stack must provide for one Terroir service.
type serviceSpec struct {
	name string
	// adminPort is the port of the service's admin server (/healthz,
	// /readyz, /metrics), from the contract table.
	adminPort string
	// listeners maps the address variable of each further server the
	// service runs to that server's port.
	listeners map[string]string
	// published lists the container ports the stack publishes on the host,
	// each on the same host port.
	published []string
	// secrets maps the variable naming each secret file the service reads
	// (beyond the keyring, which every service reads) to the file the
	// secret must come from.
	secrets map[string]string
}

// terroirServices returns the seven services of the stack.
func terroirServices() []serviceSpec {
	return []serviceSpec{
		{
			name:      "ingress",
			adminPort: "9101",
			listeners: map[string]string{"TERROIR_HTTP_ADDR": "8080"},
			published: []string{"8080", "9101"},
			secrets:   map[string]string{"TERROIR_OPERATOR_TOKEN_FILE": operatorTokenSecretFile},
		},
		{name: "contentsafety", adminPort: "9102"},
		{name: "inference", adminPort: "9103"},
		{name: "batch", adminPort: "9104"},
		{name: "finetuning", adminPort: "9105"},
		{name: "assistants", adminPort: "9106"},
		{
			name:      "review",
			adminPort: "9107",
			listeners: map[string]string{"TERROIR_REVIEW_ADDR": "8443"},
			published: []string{"8443", "9107"},
		},
	}
}

// loadProject loads and validates a compose file the way `docker compose`
// does, resolving relative paths against workingDir. It reads neither the
// process environment nor a .env file, so the result does not depend on
// where the check runs, and it does not open secret files, which do not
// exist outside a deployment.
func loadProject(ctx context.Context, file, workingDir string) (*types.Project, error) {
	opts, err := cli.NewProjectOptions([]string{file},
		cli.WithWorkingDirectory(workingDir),
		cli.WithInterpolation(true),
		cli.WithNormalization(true),
		cli.WithConsistency(true),
		cli.WithResolvedPaths(true),
	)
	if err != nil {
		return nil, fmt.Errorf("configuring the compose loader for %s: %w", file, err)
	}
	p, err := opts.LoadProject(ctx)
	if err != nil {
		return nil, fmt.Errorf("loading %s: %w", file, err)
	}
	return p, nil
}

// checkStack returns every problem the consistency checks find in the
// project; none means the stack is consistent with the repository at root.
func checkStack(p *types.Project, root string, specs []serviceSpec) []string {
	problems := checkRepository(root)
	problems = append(problems, checkBackingServices(p)...)
	for _, spec := range specs {
		problems = append(problems, checkService(p, root, spec)...)
	}
	return problems
}

// problems collects findings, each prefixed with what they are about.
type problems struct {
	prefix string
	list   []string
}

func (ps *problems) add(format string, args ...any) {
	ps.list = append(ps.list, ps.prefix+fmt.Sprintf(format, args...))
}

// checkRepository checks the files beside docker-compose.yml that keep the
// keyring out of images and out of version control.
func checkRepository(root string) []string {
	ps := &problems{prefix: "repository: "}
	pm, err := readIgnoreFile(filepath.Join(root, ".dockerignore"))
	switch {
	case err != nil:
		ps.add("%v", err)
	case pm == nil:
		ps.add(".dockerignore is missing: the build context would carry the keyring and .git")
	default:
		for _, p := range []string{".git", ".terroir/keys/keyring.json", ".terroir/operator-token", keyringSecretFile, operatorTokenSecretFile} {
			excluded, err := pm.MatchesOrParentMatches(p)
			if err != nil {
				ps.add("matching %s against .dockerignore: %v", p, err)
			} else if !excluded {
				ps.add(".dockerignore lets %s into the build context", p)
			}
		}
	}

	for _, f := range []string{keyringSecretFile, operatorTokenSecretFile} {
		ignored, err := gitignores(filepath.Join(root, ".gitignore"), f)
		if err != nil {
			ps.add("%v", err)
		} else if !ignored {
			ps.add(".gitignore does not ignore %s", f)
		}
	}
	return ps.list
}

// gitignores reports whether a line of the .gitignore file at file matches
// rel. It understands the plain glob lines this repository uses, not every
// gitignore form.
func gitignores(file, rel string) (bool, error) {
	f, err := os.Open(file)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("opening .gitignore: %w", err)
	}
	defer f.Close()
	ignored := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		negate := strings.HasPrefix(line, "!")
		pattern := strings.TrimPrefix(strings.TrimPrefix(line, "!"), "/")
		if ok, _ := path.Match(pattern, rel); ok {
			ignored = !negate
		}
	}
	if err := sc.Err(); err != nil {
		return false, fmt.Errorf("reading .gitignore: %w", err)
	}
	return ignored, nil
}

// checkBackingServices checks every Kafka and Redis service of the stack:
// healthy before the services start, data on named volumes.
func checkBackingServices(p *types.Project) []string {
	ps := &problems{}
	for _, name := range p.ServiceNames() {
		s := p.Services[name]
		ps.prefix = "service " + name + ": "
		switch {
		case isKafka(s):
			checkHealthcheck(s, ps)
			env := environment(s)
			logDir := env["KAFKA_LOG_DIRS"]
			if logDir == "" {
				ps.add("KAFKA_LOG_DIRS is not set: the log would live in the image's default directory")
			} else if !onNamedVolume(s, logDir) {
				ps.add("keeps its log in %s, which is not on a named volume", logDir)
			}
			if env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "" {
				ps.add("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR is not set: a single broker cannot hold the default 3 replicas")
			}
			for _, voter := range splitList(env["KAFKA_CONTROLLER_QUORUM_VOTERS"]) {
				_, hostPort, _ := strings.Cut(voter, "@")
				host, _, err := net.SplitHostPort(hostPort)
				if err != nil || !reachableAs(s, host) {
					ps.add("controller quorum voter %q is not this service", voter)
				}
			}
		case isRedis(s):
			checkHealthcheck(s, ps)
			if !onNamedVolume(s, "/data") {
				ps.add("keeps its data in /data, which is not on a named volume")
			}
			if !slices.Equal(flagValue(s.Command, "--appendonly"), []string{"yes"}) {
				ps.add("runs without --appendonly yes: acknowledged writes could be lost on restart")
			}
		}
	}
	return ps.list
}

func checkHealthcheck(s types.ServiceConfig, ps *problems) {
	if s.HealthCheck == nil || s.HealthCheck.Disable || len(s.HealthCheck.Test) == 0 {
		ps.add("has no healthcheck, so services cannot wait for it to be healthy")
	}
}

// checkService checks one Terroir service: build, environment, ports and keyring.
func checkService(p *types.Project, root string, spec serviceSpec) []string {
	ps := &problems{prefix: "service " + spec.name + ": "}
	s, ok := p.Services[spec.name]
	if !ok {
		ps.add("not in the compose file")
		return ps.list
	}
	checkBuild(s, root, spec, ps)
	env := environment(s)
	checkGeographies(p, s, env, ps)
	checkListenAddr(env, "TERROIR_ADMIN_ADDR", spec.adminPort, ps)
	for _, variable := range sortedKeys(spec.listeners) {
		checkListenAddr(env, variable, spec.listeners[variable], ps)
	}
	for _, port := range spec.published {
		if !publishes(s, port) {
			ps.add("does not publish container port %s on host port %s", port, port)
		}
	}
	checkSecret(p, s, env, root, "TERROIR_KEY_FILE", keyringSecretFile, ps)
	for _, variable := range sortedKeys(spec.secrets) {
		checkSecret(p, s, env, root, variable, spec.secrets[variable], ps)
	}
	checkVariablesRead(env, root, spec.name, ps)
	return ps.list
}

// terroirVariable is a TERROIR_* variable name quoted in Go source.
var terroirVariable = regexp.MustCompile(`"(TERROIR_[A-Z0-9_]+)"`)

// checkVariablesRead checks that every TERROIR_* variable the stack sets
// for a service is read by its code (its own module or pkg): a misspelt
// or outdated name would silently leave the default in force. A variable
// is read when its name, or its name without a _<GEO> suffix of one of
// TERROIR_GEOS (config.Env.PerGeo) or a _FILE suffix, is quoted in the
// code.
func checkVariablesRead(env map[string]string, root, service string, ps *problems) {
	read := map[string]bool{}
	for _, dir := range []string{filepath.Join(root, "services", service), filepath.Join(root, "pkg")} {
		err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
				return err
			}
			src, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			for _, m := range terroirVariable.FindAllStringSubmatch(string(src), -1) {
				read[m[1]] = true
			}
			return nil
		})
		if err != nil {
			ps.add("reading the code that reads the environment: %v", err)
			return
		}
	}
	isRead := func(v string) bool {
		if read[v] {
			return true
		}
		for _, g := range splitList(env["TERROIR_GEOS"]) {
			if base, ok := strings.CutSuffix(v, "_"+strings.ToUpper(g)); ok && read[base] {
				return true
			}
		}
		base, ok := strings.CutSuffix(v, "_FILE")
		return ok && read[base]
	}
	for _, v := range sortedKeys(env) {
		if strings.HasPrefix(v, "TERROIR_") && !isRead(v) {
			ps.add("%s is set, but nothing in services/%s or pkg reads it", v, service)
		}
	}
}

// checkBuild checks that the service is built from this repository by a
// Dockerfile whose build arguments name this service and whose sources
// exist and are not excluded from the build context.
func checkBuild(s types.ServiceConfig, root string, spec serviceSpec, ps *problems) {
	if s.Build == nil {
		ps.add("has no build section: it must be built from this repository")
		return
	}
	contextDir := s.Build.Context
	if !samePath(contextDir, root) {
		ps.add("build context %s is not the repository root %s", contextDir, root)
	}

	args := map[string]string{}
	for k, v := range s.Build.Args {
		if v != nil {
			args[k] = *v
		}
	}
	switch service := args["SERVICE"]; {
	case service != spec.name:
		ps.add("build argument SERVICE is %q, want %q", service, spec.name)
	case !isFile(filepath.Join(root, "services", service, "go.mod")):
		ps.add("build argument SERVICE=%s names no service module: services/%s/go.mod is missing", service, service)
	}
	if args["ADMIN_PORT"] != spec.adminPort {
		ps.add("build argument ADMIN_PORT is %q, want %q", args["ADMIN_PORT"], spec.adminPort)
	}

	dockerfile := s.Build.Dockerfile
	if dockerfile == "" {
		dockerfile = "Dockerfile"
	}
	if !filepath.IsAbs(dockerfile) {
		dockerfile = filepath.Join(contextDir, dockerfile)
	}
	df, err := parseDockerfile(dockerfile)
	if err != nil {
		ps.add("%v", err)
		return
	}
	values := map[string]string{}
	for name, def := range df.args {
		if def != nil {
			values[name] = *def
		}
	}
	for _, name := range sortedKeys(args) {
		if _, declared := df.args[name]; !declared {
			ps.add("build argument %s is not declared by an ARG in %s", name, dockerfile)
		}
		values[name] = args[name]
	}

	// BuildKit prefers an ignore file named after the Dockerfile to the one
	// at the root of the context.
	ignoreFile := dockerfile + ".dockerignore"
	if !isFile(ignoreFile) {
		ignoreFile = filepath.Join(contextDir, ".dockerignore")
	}
	ignore, err := readIgnoreFile(ignoreFile)
	if err != nil {
		ps.add("%v", err)
		return
	}
	if len(df.copies) == 0 {
		ps.add("%s copies nothing from the build context", dockerfile)
	}
	for _, cp := range df.copies {
		checkCopy(cp, contextDir, values, ignore, ps)
	}
}

// checkCopy checks the sources of one COPY or ADD instruction that copies
// from the build context.
func checkCopy(cp copyInstruction, contextDir string, values map[string]string, ignore *patternmatcher.PatternMatcher, ps *problems) {
	where := fmt.Sprintf("%s:%d: %s", cp.file, cp.line, cp.command)
	found, reported := 0, false
	for _, src := range cp.sources {
		if strings.Contains(src, "://") || strings.HasPrefix(src, "<<") {
			found++ // a URL or a here-document, not a file of the context
			continue
		}
		expanded, unset := expand(src, values)
		if len(unset) > 0 {
			ps.add("%s source %s uses %s, which has no value", where, src, strings.Join(unset, ", "))
			reported = true
			continue
		}
		rel := path.Clean(strings.TrimPrefix(expanded, "/"))
		if rel == ".." || strings.HasPrefix(rel, "../") {
			ps.add("%s source %s is outside the build context", where, expanded)
			reported = true
			continue
		}
		matches, err := filepath.Glob(filepath.Join(contextDir, filepath.FromSlash(rel)))
		if err != nil {
			ps.add("%s source %s: %v", where, expanded, err)
			reported = true
			continue
		}
		if len(matches) == 0 {
			// A pattern may match nothing (go.sum* before a module has
			// dependencies); a plain path must exist.
			if !hasGlobMeta(rel) {
				ps.add("%s source %s does not exist in the build context", where, expanded)
				reported = true
			}
			continue
		}
		for _, m := range matches {
			found++
			r, err := filepath.Rel(contextDir, m)
			if err != nil || ignore == nil {
				continue
			}
			if excluded, err := ignore.MatchesOrParentMatches(filepath.ToSlash(r)); err == nil && excluded {
				ps.add("%s source %s is excluded from the build context by .dockerignore", where, filepath.ToSlash(r))
				reported = true
			}
		}
	}
	if found == 0 && !reported {
		ps.add("%s: none of its sources %v exists in the build context", where, cp.sources)
	}
}

// checkGeographies checks that for every geography in TERROIR_GEOS the
// service reaches a Kafka cluster and a Redis of the stack that no other
// geography uses, and waits for them to be healthy.
func checkGeographies(p *types.Project, s types.ServiceConfig, env map[string]string, ps *problems) {
	geos := splitList(env["TERROIR_GEOS"])
	if len(geos) == 0 {
		ps.add("TERROIR_GEOS is not set: the service would serve the default geographies, which the stack may not provide")
	}
	usedBy := map[string]string{} // backing service -> geography using it
	var used []string
	for _, geo := range geos {
		suffix := strings.ToUpper(geo)
		backing := append(
			brokers(p, env, "TERROIR_KAFKA_BROKERS_"+suffix, geo, ps),
			redisAddr(p, env, "TERROIR_REDIS_ADDR_"+suffix, geo, ps)...)
		for _, name := range backing {
			if other, ok := usedBy[name]; ok && other != geo {
				ps.add("geographies %s and %s share %s: each geography keeps its data in its own stores", other, geo, name)
				continue
			}
			if _, ok := usedBy[name]; !ok {
				used = append(used, name)
			}
			usedBy[name] = geo
		}
	}
	for _, name := range used {
		dep, ok := s.DependsOn[name]
		switch {
		case !ok:
			ps.add("depends_on does not list %s, which it uses", name)
		case dep.Condition != types.ServiceConditionHealthy:
			ps.add("depends_on %s waits for %q, want %q", name, dep.Condition, types.ServiceConditionHealthy)
		}
	}
}

// brokers checks the bootstrap servers in variable and returns the Kafka
// services they point at.
func brokers(p *types.Project, env map[string]string, variable, geo string, ps *problems) []string {
	value, ok := env[variable]
	if !ok || value == "" {
		ps.add("%s is not set: geography %s would use the default brokers", variable, geo)
		return nil
	}
	var services []string
	for _, addr := range splitList(value) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			ps.add("%s: broker address %q: %v", variable, addr, err)
			continue
		}
		target, ok := p.Services[host]
		if !ok {
			ps.add("%s points at %s, which is not a service of the stack", variable, addr)
			continue
		}
		if !isKafka(target) {
			ps.add("%s points at %s, which is not a Kafka service (image %q)", variable, addr, target.Image)
			continue
		}
		services = append(services, host)
		checkKafkaListener(target, variable, addr, port, ps)
	}
	return services
}

// checkKafkaListener checks that a client bootstrapping from addr reaches a
// listener of the Kafka service and is told, in metadata, an address the
// other containers of the stack can resolve.
func checkKafkaListener(kafka types.ServiceConfig, variable, addr, port string, ps *problems) {
	env := environment(kafka)
	var listener string
	for name, hostPort := range listenerMap(env["KAFKA_LISTENERS"]) {
		if _, p, err := net.SplitHostPort(hostPort); err == nil && p == port {
			listener = name
		}
	}
	if listener == "" {
		ps.add("%s points at %s, but %s does not listen on port %s (KAFKA_LISTENERS=%s)",
			variable, addr, kafka.Name, port, env["KAFKA_LISTENERS"])
		return
	}
	if slices.Contains(splitList(env["KAFKA_CONTROLLER_LISTENER_NAMES"]), listener) {
		ps.add("%s points at %s, the controller listener %s of %s, not a broker listener", variable, addr, listener, kafka.Name)
		return
	}
	advertised, ok := listenerMap(env["KAFKA_ADVERTISED_LISTENERS"])[listener]
	if !ok {
		// Kafka then advertises the listener address itself, which names no host.
		ps.add("%s points at %s, but %s advertises no address for listener %s", variable, addr, kafka.Name, listener)
		return
	}
	host, advPort, err := net.SplitHostPort(advertised)
	if err != nil || !reachableAs(kafka, host) || advPort != port {
		ps.add("%s points at %s, but %s advertises %s for listener %s, which other containers do not reach as %s",
			variable, addr, kafka.Name, advertised, listener, addr)
	}
}

// redisAddr checks the Redis address in variable and returns the Redis
// service it points at.
func redisAddr(p *types.Project, env map[string]string, variable, geo string, ps *problems) []string {
	addr, ok := env[variable]
	if !ok || addr == "" {
		ps.add("%s is not set: geography %s would use the default Redis", variable, geo)
		return nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		ps.add("%s: Redis address %q: %v", variable, addr, err)
		return nil
	}
	target, ok := p.Services[host]
	if !ok {
		ps.add("%s points at %s, which is not a service of the stack", variable, addr)
		return nil
	}
	if !isRedis(target) {
		ps.add("%s points at %s, which is not a Redis service (image %q)", variable, addr, target.Image)
		return nil
	}
	listens := "6379"
	if v := flagValue(target.Command, "--port"); len(v) > 0 {
		listens = v[0]
	}
	if port != listens {
		ps.add("%s points at %s, but %s listens on port %s", variable, addr, host, listens)
	}
	return []string{host}
}

// checkListenAddr checks that the address in variable listens on port on
// every interface, as a server inside a container must to be reached.
func checkListenAddr(env map[string]string, variable, port string, ps *problems) {
	addr, ok := env[variable]
	if !ok {
		ps.add("%s is not set: the service would listen on its default loopback address, unreachable from outside the container", variable)
		return
	}
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		ps.add("%s=%s: %v", variable, addr, err)
		return
	}
	if host != "" && host != "0.0.0.0" && host != "::" {
		ps.add("%s=%s: inside a container it must listen on every interface (0.0.0.0)", variable, addr)
	}
	if p != port {
		ps.add("%s=%s: port %s, want %s", variable, addr, p, port)
	}
}

// checkSecret checks that the file variable names is a mounted secret
// read from the deployment's secrets directory at want.
func checkSecret(p *types.Project, s types.ServiceConfig, env map[string]string, root, variable, want string, ps *problems) {
	target := env[variable]
	if target == "" {
		ps.add("%s is not set: the service would look for its secret inside its image", variable)
		return
	}
	for _, sec := range s.Secrets {
		if secretTarget(sec) != target {
			continue
		}
		def, ok := p.Secrets[sec.Source]
		switch {
		case !ok:
			ps.add("secret %s is mounted but not declared", sec.Source)
		case def.File == "":
			ps.add("secret %s is not read from a file", sec.Source)
		case !samePath(def.File, filepath.Join(root, filepath.FromSlash(want))):
			ps.add("secret %s is read from %s, want %s", sec.Source, def.File, want)
		}
		return
	}
	ps.add("no secret is mounted at %s=%s", variable, target)
}

// secretTarget returns the path a service secret is mounted at.
func secretTarget(sec types.ServiceSecretConfig) string {
	switch {
	case sec.Target == "":
		return "/run/secrets/" + sec.Source
	case !path.IsAbs(sec.Target):
		return "/run/secrets/" + sec.Target
	default:
		return sec.Target
	}
}

func publishes(s types.ServiceConfig, port string) bool {
	for _, pc := range s.Ports {
		if fmt.Sprint(pc.Target) == port && pc.Published == port {
			return true
		}
	}
	return false
}

func isKafka(s types.ServiceConfig) bool { return strings.Contains(s.Image, "kafka") }

func isRedis(s types.ServiceConfig) bool { return strings.Contains(s.Image, "redis") }

// reachableAs reports whether other containers of the stack resolve host to s.
func reachableAs(s types.ServiceConfig, host string) bool {
	if host == s.Name || (host != "" && host == s.ContainerName) {
		return true
	}
	for _, n := range s.Networks {
		if n != nil && slices.Contains(n.Aliases, host) {
			return true
		}
	}
	return false
}

// onNamedVolume reports whether dir is the target of a named volume of s.
func onNamedVolume(s types.ServiceConfig, dir string) bool {
	for _, v := range s.Volumes {
		if v.Type == types.VolumeTypeVolume && v.Source != "" && path.Clean(v.Target) == path.Clean(dir) {
			return true
		}
	}
	return false
}

// environment returns the variables set in the service's environment.
func environment(s types.ServiceConfig) map[string]string {
	env := map[string]string{}
	for k, v := range s.Environment {
		if v != nil {
			env[k] = *v
		}
	}
	return env
}

// listenerMap parses a Kafka listener list (NAME://host:port,...) into
// host:port by listener name.
func listenerMap(list string) map[string]string {
	m := map[string]string{}
	for _, l := range splitList(list) {
		if name, hostPort, ok := strings.Cut(l, "://"); ok {
			m[name] = hostPort
		}
	}
	return m
}

// flagValue returns the arguments following flag in a command line.
func flagValue(command types.ShellCommand, flag string) []string {
	i := slices.Index(command, flag)
	if i < 0 {
		return nil
	}
	var values []string
	for _, a := range command[i+1:] {
		if strings.HasPrefix(a, "--") {
			break
		}
		values = append(values, a)
	}
	return values
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func samePath(a, b string) bool {
	clean := func(p string) string {
		if r, err := filepath.EvalSymlinks(p); err == nil {
			p = r
		}
		if abs, err := filepath.Abs(p); err == nil {
			p = abs
		}
		return filepath.Clean(p)
	}
	return clean(a) == clean(b)
}

func isFile(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

func hasGlobMeta(p string) bool { return strings.ContainsAny(p, `*?[\`) }

// readIgnoreFile reads a .dockerignore file; it returns nil, nil when the
// file does not exist.
func readIgnoreFile(file string) (*patternmatcher.PatternMatcher, error) {
	f, err := os.Open(file)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", file, err)
	}
	defer f.Close()
	patterns, err := ignorefile.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", file, err)
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		return nil, fmt.Errorf("parsing %s: %w", file, err)
	}
	return pm, nil
}

// dockerfile is what the checks need from a Dockerfile.
type dockerfile struct {
	// args maps each ARG name to its default, nil when it has none.
	args   map[string]*string
	copies []copyInstruction
}

// copyInstruction is a COPY or ADD that copies from the build context
// (instructions with --from= are left out).
type copyInstruction struct {
	file    string
	line    int
	command string
	sources []string
}

// parseDockerfile reads the ARG, COPY and ADD instructions of a Dockerfile.
// It follows line continuations and skips comments; it does not evaluate
// here-documents or a changed escape character, which the repository's
// Dockerfiles do not use.
func parseDockerfile(file string) (dockerfile, error) {
	df := dockerfile{args: map[string]*string{}}
	data, err := os.ReadFile(file)
	if err != nil {
		return df, fmt.Errorf("reading Dockerfile: %w", err)
	}
	name := filepath.Base(filepath.Dir(file)) + "/" + filepath.Base(file)
	var logical strings.Builder
	start := 0
	for i, raw := range strings.Split(string(data), "\n") {
		line := strings.TrimSpace(raw)
		if strings.HasPrefix(line, "#") || (line == "" && logical.Len() > 0) {
			continue // comments, and blank lines inside a continued instruction
		}
		if logical.Len() == 0 {
			start = i + 1
		}
		if cont, ok := strings.CutSuffix(line, `\`); ok {
			logical.WriteString(cont + " ")
			continue
		}
		logical.WriteString(line)
		if err := df.add(name, start, logical.String()); err != nil {
			return df, err
		}
		logical.Reset()
	}
	if logical.Len() > 0 {
		return df, fmt.Errorf("%s:%d: instruction continues past the end of the file", name, start)
	}
	return df, nil
}

func (df *dockerfile) add(file string, line int, instruction string) error {
	command, rest, _ := strings.Cut(strings.TrimSpace(instruction), " ")
	command = strings.ToUpper(command)
	rest = strings.TrimSpace(rest)
	switch command {
	case "ARG":
		for _, f := range strings.Fields(rest) {
			name, def, hasDefault := strings.Cut(f, "=")
			if hasDefault {
				d := strings.Trim(def, `"`)
				df.args[name] = &d
			} else if _, seen := df.args[name]; !seen {
				df.args[name] = nil
			}
		}
	case "COPY", "ADD":
		var words []string
		for len(rest) > 0 && strings.HasPrefix(rest, "--") {
			flag, after, _ := strings.Cut(rest, " ")
			if strings.HasPrefix(flag, "--from=") {
				return nil // copies from another stage or image
			}
			rest = strings.TrimSpace(after)
		}
		if strings.HasPrefix(rest, "[") {
			if err := json.Unmarshal([]byte(rest), &words); err != nil {
				return fmt.Errorf("%s:%d: %s in JSON form: %w", file, line, command, err)
			}
		} else {
			words = strings.Fields(rest)
		}
		if len(words) < 2 {
			return fmt.Errorf("%s:%d: %s needs a source and a destination", file, line, command)
		}
		df.copies = append(df.copies, copyInstruction{
			file: file, line: line, command: command, sources: words[:len(words)-1],
		})
	}
	return nil
}

// expand substitutes $NAME, ${NAME} and ${NAME:-default} in s with values,
// the way a Dockerfile does for build arguments, and lists the names that
// had no value.
func expand(s string, values map[string]string) (string, []string) {
	var unset []string
	out := os.Expand(s, func(name string) string {
		name, def, hasDefault := strings.Cut(name, ":-")
		if v, ok := values[name]; ok && v != "" {
			return v
		}
		if hasDefault {
			return def
		}
		unset = append(unset, name)
		return ""
	})
	return out, unset
}
