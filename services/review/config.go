package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"github.com/terroir-ai/terroir/pkg/config"
	"github.com/terroir-ai/terroir/services/review/console"
	"github.com/terroir-ai/terroir/services/review/detect"
)

// Config is review's own configuration, beside the shared one.
type Config struct {
	// RulesFile holds the detection rules (TERROIR_REVIEW_RULES_FILE);
	// unset, detect.DefaultRules apply.
	RulesFile string
	// ConsoleAddr is where the review console listens
	// (TERROIR_REVIEW_ADDR, default 127.0.0.1:8443).
	ConsoleAddr string
	// TLSCert and TLSKey are the console's server certificate and key,
	// PEM files (TERROIR_REVIEW_TLS_CERT, TERROIR_REVIEW_TLS_KEY).
	TLSCert, TLSKey string
	// ClientCA is the review CA, a PEM file of one or more certificates:
	// only client certificates it issued reach the console
	// (TERROIR_REVIEW_CLIENT_CA).
	ClientCA string
	// PeopleFile is the people directory, YAML
	// (TERROIR_REVIEW_PEOPLE_FILE).
	PeopleFile string
	// CSRFKeyFile, when set, holds the key (at least 32 bytes) that binds
	// the console's forms to a person's certificate, shared by consoles
	// behind one address (TERROIR_REVIEW_CSRF_KEY_FILE); unset, each
	// process picks a random key.
	CSRFKeyFile string
}

// consoleVars are the variables the console needs; with none of them set
// the console is off, with only some of them the configuration is wrong.
var consoleVars = []string{"TERROIR_REVIEW_TLS_CERT", "TERROIR_REVIEW_TLS_KEY", "TERROIR_REVIEW_CLIENT_CA", "TERROIR_REVIEW_PEOPLE_FILE"}

func loadConfig(env *config.Env) Config {
	c := Config{
		RulesFile:   env.Lookup("TERROIR_REVIEW_RULES_FILE"),
		ConsoleAddr: env.String("TERROIR_REVIEW_ADDR", console.DefaultAddr),
		TLSCert:     env.Lookup("TERROIR_REVIEW_TLS_CERT"),
		TLSKey:      env.Lookup("TERROIR_REVIEW_TLS_KEY"),
		ClientCA:    env.Lookup("TERROIR_REVIEW_CLIENT_CA"),
		PeopleFile:  env.Lookup("TERROIR_REVIEW_PEOPLE_FILE"),
		CSRFKeyFile: env.Lookup("TERROIR_REVIEW_CSRF_KEY_FILE"),
	}
	set := 0
	for _, v := range consoleVars {
		if env.Lookup(v) != "" {
			set++
		}
	}
	if set > 0 && set < len(consoleVars) {
		for _, v := range consoleVars {
			if env.Lookup(v) == "" {
				env.Fail(v, errors.New("required by the review console (the other console variables are set)"))
			}
		}
	}
	return c
}

// ConsoleOn reports whether the console is configured.
func (c Config) ConsoleOn() bool {
	return c.TLSCert != "" && c.TLSKey != "" && c.ClientCA != "" && c.PeopleFile != ""
}

// rules returns the configured detection rules.
func (c Config) rules() ([]detect.Rule, error) {
	if c.RulesFile == "" {
		return detect.DefaultRules(), nil
	}
	r, err := detect.LoadRules(c.RulesFile)
	if err != nil {
		return nil, fmt.Errorf("TERROIR_REVIEW_RULES_FILE: %w", err)
	}
	return r, nil
}

// consoleFiles are what the console reads from files at start.
type consoleFiles struct {
	cert    tls.Certificate
	cas     *x509.CertPool
	people  *console.Directory
	csrfKey []byte
}

// loadConsoleFiles reads the console's files, reporting every problem at
// once, each naming its variable.
func (c Config) loadConsoleFiles() (consoleFiles, error) {
	var f consoleFiles
	var errs []error
	var err error
	if f.cert, err = tls.LoadX509KeyPair(c.TLSCert, c.TLSKey); err != nil {
		errs = append(errs, fmt.Errorf("TERROIR_REVIEW_TLS_CERT, TERROIR_REVIEW_TLS_KEY: %w", err))
	}
	if pem, err := os.ReadFile(c.ClientCA); err != nil {
		errs = append(errs, fmt.Errorf("TERROIR_REVIEW_CLIENT_CA: %w", err))
	} else {
		f.cas = x509.NewCertPool()
		if !f.cas.AppendCertsFromPEM(pem) {
			errs = append(errs, fmt.Errorf("TERROIR_REVIEW_CLIENT_CA: %s holds no PEM certificate", c.ClientCA))
		}
	}
	if f.people, err = console.LoadDirectory(c.PeopleFile); err != nil {
		errs = append(errs, fmt.Errorf("TERROIR_REVIEW_PEOPLE_FILE: %w", err))
	}
	if c.CSRFKeyFile != "" {
		if f.csrfKey, err = os.ReadFile(c.CSRFKeyFile); err != nil {
			errs = append(errs, fmt.Errorf("TERROIR_REVIEW_CSRF_KEY_FILE: %w", err))
		} else if len(f.csrfKey) < 32 {
			errs = append(errs, fmt.Errorf("TERROIR_REVIEW_CSRF_KEY_FILE: %s holds %d bytes; at least 32 are needed", c.CSRFKeyFile, len(f.csrfKey)))
		}
	}
	if len(errs) > 0 {
		return consoleFiles{}, fmt.Errorf("invalid configuration: %w", errors.Join(errs...))
	}
	return f, nil
}
