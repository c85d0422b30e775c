package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigDefaults(t *testing.T) {
	cfg, err := loadConfig("")
	if err != nil {
		t.Fatal(err)
	}
	if cfg != defaultConfig() {
		t.Fatalf("no config file: %+v, want the defaults", cfg)
	}
	if err := cfg.validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
}

func TestConfigFile(t *testing.T) {
	cfg, err := loadConfig(writeConfig(t, `
root = "/srv/lazysnap"
fuse_manager = false
[fetch]
max_concurrency = 3
[prefetch]
wait_timeout = "1m30s"
[cri_image_service]
address = "/run/lazysnap/cri-image.sock"
`))
	if err != nil {
		t.Fatal(err)
	}
	want := defaultConfig()
	want.Root, want.FuseManager = "/srv/lazysnap", false
	want.Fetch.MaxConcurrency = 3
	want.Prefetch.WaitTimeout = duration(90 * time.Second)
	want.CRIImageService.Address = "/run/lazysnap/cri-image.sock"
	if cfg != want {
		t.Fatalf("got %+v\nwant %+v", cfg, want)
	}
}

func TestConfigRejects(t *testing.T) {
	for name, body := range map[string]string{
		"unknown key":                  "rot = \"/x\"\n",
		"unknown section":              "[cache]\nmax_byte = 1\n",
		"bad duration":                 "[prefetch]\nwait_timeout = \"soon\"\n",
		"bad log level":                "log_level = \"chatty\"\n",
		"no concurrency":               "[fetch]\nmax_concurrency = 0\n",
		"cri proxy without containerd": "[cri_image_service]\naddress = \"/x.sock\"\ncontainerd_address = \"\"\n",
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := loadConfig(writeConfig(t, body)); err == nil {
				t.Fatal("loaded without error")
			}
		})
	}
}

func TestServeFlagsOverrideConfig(t *testing.T) {
	cmd := newServeCommand()
	if err := cmd.ParseFlags([]string{"--root", "/flag/root", "--fuse-manager=false"}); err != nil {
		t.Fatal(err)
	}
	cfg := defaultConfig()
	cfg.Address = "/from/config.sock"
	f := serveFlags{root: "/flag/root", fuseManager: false}
	f.apply(cmd, &cfg)
	if cfg.Root != "/flag/root" || cfg.FuseManager || cfg.Address != "/from/config.sock" {
		t.Fatalf("after flags: %+v", cfg)
	}
}
