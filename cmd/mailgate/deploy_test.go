package main

import (
	"os"
	"path/filepath"
	"testing"
)

// The shipped example configs must stay valid as the config grows: they
// are decoded strictly and validated (files they name are not opened).
func TestDeployExamplesAreValid(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "..", "docs", "deploy", "examples", "*.yaml"))
	if err != nil || len(files) < 2 {
		t.Fatalf("example configs: %v %v", files, err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := parseConfig(data)
		if err != nil {
			t.Errorf("%s: %v", filepath.Base(f), err)
			continue
		}
		if !cfg.Syslog.Enabled || cfg.Syslog.Tag != "NGINXMAILAUTH" {
			t.Errorf("%s: examples keep the fail2ban syslog lines on", filepath.Base(f))
		}
	}
}
