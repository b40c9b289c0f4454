package compose

import (
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/types"
)

// repositoryRoot returns the absolute path of the repository root.
func repositoryRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatalf("resolving the repository root: %v", err)
	}
	return root
}

func TestComposeFile(t *testing.T) {
	root := repositoryRoot(t)
	p, err := loadProject(t.Context(), filepath.Join(root, "docker-compose.yml"), root)
	if err != nil {
		t.Fatal(err)
	}
	if p.Name != "terroir" {
		t.Errorf("project name is %q, want %q", p.Name, "terroir")
	}

	for _, spec := range terroirServices() {
		t.Run(spec.name, func(t *testing.T) {
			t.Parallel()
			for _, problem := range checkService(p, root, spec) {
				t.Error(problem)
			}
		})
	}
	t.Run("backing services", func(t *testing.T) {
		t.Parallel()
		for _, problem := range checkBackingServices(p) {
			t.Error(problem)
		}
	})
	t.Run("repository", func(t *testing.T) {
		t.Parallel()
		for _, problem := range checkRepository(root) {
			t.Error(problem)
		}
	})
}

// TestConsistencyCheckFindsBreakage breaks a copy of the compose document
// in one way at a time and expects the consistency check to say so.
func TestConsistencyCheckFindsBreakage(t *testing.T) {
	root := repositoryRoot(t)
	tests := []struct {
		name    string
		breakIt func(t *testing.T, p *types.Project)
		want    string
	}{
		{
			// Nothing broken: whatever the other cases report comes from
			// what they broke.
			name: "unbroken copy",
		},
		{
			name:    "broker service does not exist",
			breakIt: setEnv("ingress", "TERROIR_KAFKA_BROKERS_EU", "kafka-nowhere:9092"),
			want:    "service ingress: TERROIR_KAFKA_BROKERS_EU points at kafka-nowhere:9092, which is not a service of the stack",
		},
		{
			name:    "broker is not Kafka",
			breakIt: setEnv("contentsafety", "TERROIR_KAFKA_BROKERS_US", "redis-us:6379"),
			want:    "service contentsafety: TERROIR_KAFKA_BROKERS_US points at redis-us:6379, which is not a Kafka service",
		},
		{
			name:    "broker port not listened on",
			breakIt: setEnv("inference", "TERROIR_KAFKA_BROKERS_EU", "kafka-eu:9999"),
			want:    "service inference: TERROIR_KAFKA_BROKERS_EU points at kafka-eu:9999, but kafka-eu does not listen on port 9999",
		},
		{
			name:    "broker address is the controller listener",
			breakIt: setEnv("inference", "TERROIR_KAFKA_BROKERS_EU", "kafka-eu:9093"),
			want:    "the controller listener CONTROLLER of kafka-eu",
		},
		{
			name:    "broker advertises an address other containers cannot reach",
			breakIt: setEnv("kafka-eu", "KAFKA_ADVERTISED_LISTENERS", "PLAINTEXT://localhost:9092"),
			want:    "kafka-eu advertises localhost:9092 for listener PLAINTEXT",
		},
		{
			name:    "geographies share a Kafka cluster",
			breakIt: setEnv("batch", "TERROIR_KAFKA_BROKERS_US", "kafka-eu:9092"),
			want:    "service batch: geographies eu and us share kafka-eu",
		},
		{
			name:    "Redis service does not exist",
			breakIt: setEnv("assistants", "TERROIR_REDIS_ADDR_EU", "redis-nowhere:6379"),
			want:    "service assistants: TERROIR_REDIS_ADDR_EU points at redis-nowhere:6379, which is not a service of the stack",
		},
		{
			name:    "Redis port is wrong",
			breakIt: setEnv("assistants", "TERROIR_REDIS_ADDR_US", "redis-us:6390"),
			want:    "service assistants: TERROIR_REDIS_ADDR_US points at redis-us:6390, but redis-us listens on port 6379",
		},
		{
			name:    "geography without Redis",
			breakIt: unsetEnv("finetuning", "TERROIR_REDIS_ADDR_US"),
			want:    "service finetuning: TERROIR_REDIS_ADDR_US is not set",
		},
		{
			name:    "admin port differs from the contract",
			breakIt: setEnv("batch", "TERROIR_ADMIN_ADDR", "0.0.0.0:9999"),
			want:    "service batch: TERROIR_ADMIN_ADDR=0.0.0.0:9999: port 9999, want 9104",
		},
		{
			name:    "admin server on loopback",
			breakIt: setEnv("batch", "TERROIR_ADMIN_ADDR", "127.0.0.1:9104"),
			want:    "service batch: TERROIR_ADMIN_ADDR=127.0.0.1:9104: inside a container it must listen on every interface",
		},
		{
			name:    "variable nothing reads",
			breakIt: setEnv("batch", "TERROIR_BATCH_ADDR", "0.0.0.0:9000"),
			want:    "service batch: TERROIR_BATCH_ADDR is set, but nothing in services/batch or pkg reads it",
		},
		{
			name: "dependency missing",
			breakIt: editService("assistants", func(t *testing.T, s *types.ServiceConfig) {
				s.DependsOn = maps.Clone(s.DependsOn)
				delete(s.DependsOn, "redis-us")
			}),
			want: "service assistants: depends_on does not list redis-us",
		},
		{
			name: "dependency not waited for",
			breakIt: editService("review", func(t *testing.T, s *types.ServiceConfig) {
				s.DependsOn = maps.Clone(s.DependsOn)
				d := s.DependsOn["kafka-us"]
				d.Condition = types.ServiceConditionStarted
				s.DependsOn["kafka-us"] = d
			}),
			want: `service review: depends_on kafka-us waits for "service_started", want "service_healthy"`,
		},
		{
			name: "keyring not mounted",
			breakIt: editService("inference", func(t *testing.T, s *types.ServiceConfig) {
				s.Secrets = nil
			}),
			want: "service inference: no secret is mounted at TERROIR_KEY_FILE=/run/secrets/terroir-keyring",
		},
		{
			name: "operator token not mounted",
			breakIt: editService("ingress", func(t *testing.T, s *types.ServiceConfig) {
				s.Secrets = s.Secrets[:1]
			}),
			want: "service ingress: no secret is mounted at TERROIR_OPERATOR_TOKEN_FILE=/run/secrets/terroir-operator-token",
		},
		{
			name:    "operator token read from the image",
			breakIt: unsetEnv("ingress", "TERROIR_OPERATOR_TOKEN_FILE"),
			want:    "service ingress: TERROIR_OPERATOR_TOKEN_FILE is not set",
		},
		{
			name: "build argument names no service",
			breakIt: editService("batch", func(t *testing.T, s *types.ServiceConfig) {
				s.Build.Args = maps.Clone(s.Build.Args)
				s.Build.Args["SERVICE"] = ptr("batches")
			}),
			want: `service batch: build argument SERVICE is "batches", want "batch"`,
		},
		{
			name: "Dockerfile copies a missing file",
			breakIt: editService("review", func(t *testing.T, s *types.ServiceConfig) {
				dockerfile := filepath.Join(t.TempDir(), "Dockerfile")
				content := "FROM scratch\nARG SERVICE\nARG ADMIN_PORT\nCOPY --from=builder /out /out\n" +
					"COPY services/${SERVICE}/go.mod \\\n    services/${SERVICE}/missing.txt /src/\n"
				if err := os.WriteFile(dockerfile, []byte(content), 0o600); err != nil {
					t.Fatal(err)
				}
				s.Build.Dockerfile = dockerfile
			}),
			want: "Dockerfile:5: COPY source services/review/missing.txt does not exist in the build context",
		},
		{
			name: "port not published",
			breakIt: editService("ingress", func(t *testing.T, s *types.ServiceConfig) {
				s.Ports = nil
			}),
			want: "service ingress: does not publish container port 8080 on host port 8080",
		},
		{
			name: "Kafka without healthcheck",
			breakIt: editService("kafka-us", func(t *testing.T, s *types.ServiceConfig) {
				s.HealthCheck = nil
			}),
			want: "service kafka-us: has no healthcheck",
		},
		{
			name: "service missing",
			breakIt: func(t *testing.T, p *types.Project) {
				delete(p.Services, "review")
			},
			want: "service review: not in the compose file",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, err := loadProject(t.Context(), filepath.Join(root, "docker-compose.yml"), root)
			if err != nil {
				t.Fatal(err)
			}
			if tt.breakIt != nil {
				tt.breakIt(t, p)
			}
			broken := writeProject(t, p)
			q, err := loadProject(t.Context(), broken, root)
			if err != nil {
				t.Fatalf("the broken copy no longer loads: %v", err)
			}
			problems := checkStack(q, root, terroirServices())
			if tt.want == "" {
				for _, problem := range problems {
					t.Error(problem)
				}
				return
			}
			for _, problem := range problems {
				if strings.Contains(problem, tt.want) {
					return
				}
			}
			t.Errorf("no problem reported contains %q; reported:\n%s", tt.want, strings.Join(problems, "\n"))
		})
	}
}

// writeProject writes p as a compose document into a temporary directory
// and returns its path.
func writeProject(t *testing.T, p *types.Project) string {
	t.Helper()
	data, err := p.MarshalYAML()
	if err != nil {
		t.Fatalf("marshalling the broken project: %v", err)
	}
	file := filepath.Join(t.TempDir(), "docker-compose.yml")
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatalf("writing the broken project: %v", err)
	}
	return file
}

func editService(name string, edit func(t *testing.T, s *types.ServiceConfig)) func(*testing.T, *types.Project) {
	return func(t *testing.T, p *types.Project) {
		t.Helper()
		s, ok := p.Services[name]
		if !ok {
			t.Fatalf("service %s is not in the compose file", name)
		}
		edit(t, &s)
		p.Services[name] = s
	}
}

func setEnv(service, variable, value string) func(*testing.T, *types.Project) {
	return editService(service, func(t *testing.T, s *types.ServiceConfig) {
		s.Environment = maps.Clone(s.Environment)
		s.Environment[variable] = ptr(value)
	})
}

func unsetEnv(service, variable string) func(*testing.T, *types.Project) {
	return editService(service, func(t *testing.T, s *types.ServiceConfig) {
		s.Environment = maps.Clone(s.Environment)
		delete(s.Environment, variable)
	})
}

func ptr(s string) *string { return &s }
