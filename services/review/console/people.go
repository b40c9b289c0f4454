package console

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"

	"gopkg.in/yaml.v3"
)

// Roles of the people directory.
const (
	// RoleReviewer may ask for just-in-time access, look up flagged
	// records and decide cases while a grant is live.
	RoleReviewer = "reviewer"
	// RoleManager may also approve or deny other people's requests for
	// access and read the audit trail.
	RoleManager = "manager"
)

// Person is one entry of the people directory.
type Person struct {
	// Name is the Subject CommonName of the person's client certificate.
	Name string `yaml:"name"`
	// Role is RoleReviewer or RoleManager.
	Role string `yaml:"role"`
	// Location is the region the person works from ("EEA", "US"); a
	// geography's records are opened only by people located in its review
	// region (geo.Geo.ReviewRegion).
	Location string `yaml:"location"`
}

// IsManager reports whether p may approve access and read audit trails.
func (p Person) IsManager() bool { return p.Role == RoleManager }

// Directory is the people allowed to use the console.
type Directory struct {
	people map[string]Person
}

// LoadDirectory reads a people directory from a YAML file:
//
//	people:
//	  - name: ana.reviewer
//	    role: reviewer
//	    location: EEA
//	  - name: jonas.manager
//	    role: manager
//	    location: EEA
//
// A bare list of people is accepted too.
func LoadDirectory(path string) (*Directory, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading the people directory: %w", err)
	}
	d, err := ParseDirectory(b)
	if err != nil {
		return nil, fmt.Errorf("people directory %s: %w", path, err)
	}
	return d, nil
}

// ParseDirectory parses a people directory (see LoadDirectory).
func ParseDirectory(b []byte) (*Directory, error) {
	var people []Person
	var doc struct {
		People []Person `yaml:"people"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err == nil {
		people = doc.People
	} else {
		dec = yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(true)
		if lerr := dec.Decode(&people); lerr != nil {
			return nil, fmt.Errorf("not a list of people: %w", err)
		}
	}
	return NewDirectory(people...)
}

// NewDirectory checks people: every name set and unique, every role
// known, every location set. Locations are compared in upper case.
func NewDirectory(people ...Person) (*Directory, error) {
	d := &Directory{people: map[string]Person{}}
	var errs []error
	for i, p := range people {
		p.Name = strings.TrimSpace(p.Name)
		p.Role = strings.ToLower(strings.TrimSpace(p.Role))
		p.Location = strings.ToUpper(strings.TrimSpace(p.Location))
		switch {
		case p.Name == "":
			errs = append(errs, fmt.Errorf("person %d: no name", i+1))
			continue
		case p.Role != RoleReviewer && p.Role != RoleManager:
			errs = append(errs, fmt.Errorf("%s: role %q is neither %s nor %s", p.Name, p.Role, RoleReviewer, RoleManager))
		case p.Location == "":
			errs = append(errs, fmt.Errorf("%s: no location", p.Name))
		}
		if _, dup := d.people[p.Name]; dup {
			errs = append(errs, fmt.Errorf("%s: listed twice", p.Name))
			continue
		}
		d.people[p.Name] = p
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if len(d.people) == 0 {
		return nil, errors.New("no people listed")
	}
	return d, nil
}

// Person returns the person whose certificate names name.
func (d *Directory) Person(name string) (Person, bool) {
	p, ok := d.people[name]
	return p, ok
}

// Len is the number of people listed.
func (d *Directory) Len() int { return len(d.people) }
