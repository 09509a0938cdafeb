package bench

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/imstream/imstream/internal/plumbing/config"
)

// startIMR runs im_service's router (the binary at Options.IMR, built from
// an im_service checkout with `go build ./imr`) listening on addr and
// writing its push lists into this bench's Redis, so a scenario can put the
// same load through imr and through imstream in one run. imr keeps nothing
// of its own in Redis; its config file lives in the temporary directory.
func (b *Bench) startIMR(cfg config.Config, addr string) (*child, error) {
	conf := filepath.Join(os.TempDir(), fmt.Sprintf("imstream-bench-imr-%d.cfg", os.Getpid()))
	body := fmt.Sprintf("listen=%q\n\n[redis]\naddress=%q\npassword=\"\"\ndb=0\n\n[log]\nlevel=\"warn\"\n", addr, cfg.Redis.Addrs[0])
	if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
		return nil, err
	}
	return b.spawn("imr", b.o.IMR, []string{conf}, "")
}
