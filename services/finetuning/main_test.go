package main

import (
	"testing"

	"github.com/terroir-ai/terroir/pkg/daemon/daemontest"
)

func TestLifecycle(t *testing.T) { daemontest.CheckLifecycle(t, run) }
