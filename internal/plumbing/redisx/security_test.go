package redisx_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imstream/imstream/internal/plumbing/config"
	"github.com/imstream/imstream/internal/plumbing/redisx"
	"github.com/imstream/imstream/internal/tools/embedded"
	"github.com/imstream/imstream/internal/tools/testkit"
)

func ping(t *testing.T, cfg config.Redis) error {
	t.Helper()
	c, err := redisx.New(cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		return err
	}
	return c.Get(ctx, "k").Err()
}

func expectErr(t *testing.T, err error, want string) {
	t.Helper()
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("err = %v, want one saying %q", err, want)
	}
}

func TestRedisPassword(t *testing.T) {
	r := testkit.Redis(t, embedded.RedisOptions{Extra: []string{"--requirepass", "s3cret"}})
	cfg := config.Default().Redis
	cfg.Addrs = []string{r.Addr}
	cfg.Password = "s3cret"
	if err := ping(t, cfg); err != nil {
		t.Fatalf("with password: %v", err)
	}
	cfg.Password = ""
	expectErr(t, ping(t, cfg), "NOAUTH")
}

func TestRedisACLUser(t *testing.T) {
	acl := filepath.Join(t.TempDir(), "users.acl")
	if err := os.WriteFile(acl, []byte("user imstream on >s3cret ~* &* +@all\nuser default off\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := testkit.Redis(t, embedded.RedisOptions{Extra: []string{"--aclfile", acl}})
	cfg := config.Default().Redis
	cfg.Addrs = []string{r.Addr}
	cfg.Username, cfg.Password = "imstream", "s3cret"
	if err := ping(t, cfg); err != nil {
		t.Fatalf("with ACL user: %v", err)
	}
	cfg.Password = "wrong"
	expectErr(t, ping(t, cfg), "WRONGPASS")
	cfg.Username, cfg.Password = "", ""
	expectErr(t, ping(t, cfg), "NOAUTH")
}

func TestRedisTLS(t *testing.T) {
	certs := testkit.NewCerts(t)
	r := testkit.Redis(t, embedded.RedisOptions{TLS: &embedded.TLSFiles{CertFile: certs.CertFile, KeyFile: certs.KeyFile, CAFile: certs.CAFile}})
	cfg := config.Default().Redis
	cfg.Addrs = []string{r.Addr}
	cfg.TLS = config.TLS{Enabled: true, CAFile: certs.CAFile}
	if err := ping(t, cfg); err != nil {
		t.Fatalf("with TLS: %v", err)
	}
	cfg.TLS = config.TLS{}
	cfg.ReadTimeout = 500 * time.Millisecond
	if err := ping(t, cfg); err == nil {
		t.Fatal("plaintext client talked to a TLS-only Redis")
	}
	cfg.TLS = config.TLS{Enabled: true} // system roots do not know the test CA
	expectErr(t, ping(t, cfg), "certificate")
}
