package loadgen

import "testing"

// TestSourceIP: a gateway on this host over IPv4 gets one loopback source
// address per simulated server; a remote one (or IPv6 loopback, which a
// 127.x source cannot reach) the kernel's choice.
func TestSourceIP(t *testing.T) {
	for _, c := range []struct {
		gateway string
		i       int
		want    string
	}{
		{"127.0.0.1:4444", 0, "127.0.0.10"},
		{"127.0.0.1:4444", 3, "127.0.0.13"},
		{"10.1.2.3:4444", 0, ""},
		{"192.168.0.7:4444", 2, ""},
		{"[::1]:4444", 0, ""},
		{"[2001:db8::1]:4444", 0, ""},
		{"no-port", 0, ""},
	} {
		if got := sourceIP(c.gateway, c.i); got != c.want {
			t.Errorf("sourceIP(%q, %d) = %q, want %q", c.gateway, c.i, got, c.want)
		}
	}
}
