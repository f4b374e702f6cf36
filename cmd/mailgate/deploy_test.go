package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
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

// dockerfileLines returns the repository Dockerfile's instructions, one
// per entry with continuation lines joined, and its comment lines apart.
func dockerfileLines(t *testing.T) (instructions, comments []string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	var cur string
	for _, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(l, "#") {
			comments = append(comments, l)
			continue
		}
		if s, ok := strings.CutSuffix(l, "\\"); ok {
			cur += s
			continue
		}
		if cur += l; strings.TrimSpace(cur) != "" {
			instructions = append(instructions, strings.Join(strings.Fields(cur), " "))
		}
		cur = ""
	}
	return instructions, comments
}

// The image's promises (docs/operations.md, "Container image") are kept
// by its Dockerfile: both targets, release (the default) and prebuilt
// (pull-free), are the base stage, which is scratch and runs as the
// user docs/deploy/image/passwd names, has a HEALTHCHECK that is a real
// command, serves the default config path and exposes the default
// ports; and the pull-free recipe in the header builds as the Go stage
// does.
func TestDockerfileImage(t *testing.T) {
	ins, comments := dockerfileLines(t)
	stages := map[string]map[string]string{} // stage name -> instruction -> arguments
	var last string
	for _, l := range ins {
		k, v, _ := strings.Cut(l, " ")
		if k == "FROM" {
			from, name, _ := strings.Cut(v, " AS ")
			last = name
			stages[name] = map[string]string{"FROM": from}
			continue
		}
		if last != "" {
			if prev, ok := stages[last][k]; ok {
				v = prev + "\n" + v // COPY, LABEL: every one
			}
			stages[last][k] = v
		}
	}
	if last != "release" || stages["release"]["FROM"] != "base" || stages["prebuilt"]["FROM"] != "base" {
		t.Fatalf("targets: last stage %q; release from %q, prebuilt from %q; want both from base, release last",
			last, stages["release"]["FROM"], stages["prebuilt"]["FROM"])
	}
	for _, name := range []string{"base", "empty"} {
		if stages[name]["FROM"] != "scratch" {
			t.Errorf("stage %s is FROM %q: the pull-free target must not pull", name, stages[name]["FROM"])
		}
	}
	if strings.Contains(stages["prebuilt"]["COPY"], "--from") {
		t.Errorf("the prebuilt target copies from another stage: %s", stages["prebuilt"]["COPY"])
	}
	base := stages["base"]
	passwd, err := os.ReadFile(filepath.Join("..", "..", "docs", "deploy", "image", "passwd"))
	if err != nil {
		t.Fatal(err)
	}
	if base["USER"] != "65532:65532" || !strings.Contains(string(passwd), ":x:65532:65532:") {
		t.Errorf("USER %q, and passwd must name 65532:65532:\n%s", base["USER"], passwd)
	}
	if want := `["serve", "-config", "` + defaultConfigPath + `"]`; base["CMD"] != want {
		t.Errorf("CMD %s, want %s", base["CMD"], want)
	}
	if base["EXPOSE"] != "993 995 465 587" {
		t.Errorf("EXPOSE %q, want the default listeners' ports", base["EXPOSE"])
	}
	hc := base["HEALTHCHECK"]
	_, cmd, _ := strings.Cut(hc, "CMD ")
	if cmd != `["/usr/local/bin/mailgate", "health"]` {
		t.Errorf("HEALTHCHECK %q", hc)
	}
	var out, errb strings.Builder
	if code := run([]string{"health", "-h"}, strings.NewReader(""), &out, &errb); code != 0 {
		t.Errorf("the HEALTHCHECK's command does not exist: %d %s", code, errb.String())
	}
	// The toolchain stage's flags, and the header's pull-free recipe.
	var runFlags, docFlags string
	for _, l := range ins {
		if i := strings.Index(l, "go build "); i >= 0 && strings.HasPrefix(l, "RUN ") {
			runFlags, _, _ = strings.Cut(l[i:], " -o ")
		}
	}
	for _, l := range comments {
		if i := strings.Index(l, "go build "); i >= 0 {
			docFlags, _, _ = strings.Cut(strings.TrimSuffix(strings.TrimSpace(l[i:]), "\\"), " -o")
			docFlags = strings.TrimSpace(docFlags)
		}
	}
	if runFlags == "" || strings.ReplaceAll(runFlags, "${VERSION}", "1.0.0") != docFlags {
		t.Errorf("the pull-free recipe builds with %q, the Go stage with %q", docFlags, runFlags)
	}
}

// compose.yaml runs the image as documented and matches the config it
// points to (docs/deploy/examples/in-compose.yaml) and the backends'
// trust settings (docs/deploy/compose/).
func TestComposeExample(t *testing.T) {
	root := filepath.Join("..", "..")
	data, err := os.ReadFile(filepath.Join(root, "compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var compose struct {
		Services map[string]struct {
			User            string   `yaml:"user"`
			ReadOnly        bool     `yaml:"read_only"`
			CapDrop         []string `yaml:"cap_drop"`
			Ports           []string `yaml:"ports"`
			StopGracePeriod string   `yaml:"stop_grace_period"`
			Networks        map[string]struct {
				IPv4 string `yaml:"ipv4_address"`
			} `yaml:"networks"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(data, &compose); err != nil {
		t.Fatal(err)
	}
	mg, ok := compose.Services["mailgate"]
	if !ok {
		t.Fatal("compose.yaml has no mailgate service")
	}
	if mg.User != "65532:65532" || !mg.ReadOnly || len(mg.CapDrop) != 1 || mg.CapDrop[0] != "ALL" {
		t.Errorf("mailgate service: user %q read_only %v cap_drop %v", mg.User, mg.ReadOnly, mg.CapDrop)
	}
	cfg, err := loadConfig(filepath.Join(root, "docs", "deploy", "examples", "in-compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	published := map[string]bool{}
	for _, p := range mg.Ports {
		_, inside, _ := strings.Cut(p, ":")
		published[inside] = true
	}
	for _, l := range cfg.Listeners {
		_, port, _ := net.SplitHostPort(l.Address)
		if !published[port] {
			t.Errorf("listener %s (%s) is not published by compose.yaml (%v)", l.Name, l.Address, mg.Ports)
		}
	}
	grace, err := time.ParseDuration(mg.StopGracePeriod)
	if err != nil || grace <= cfg.DrainTimeout {
		t.Errorf("stop_grace_period %q must exceed drain_timeout %v", mg.StopGracePeriod, cfg.DrainTimeout)
	}
	ip := mg.Networks["mail"].IPv4
	for _, f := range []string{"dovecot-mailgate.conf", "postfix-mailgate.sh"} {
		b, err := os.ReadFile(filepath.Join(root, "docs", "deploy", "compose", f))
		if err != nil {
			t.Fatal(err)
		}
		if ip == "" || !strings.Contains(string(b), ip+"/32") {
			t.Errorf("%s does not trust mailgate's address %q", f, ip)
		}
	}
}
