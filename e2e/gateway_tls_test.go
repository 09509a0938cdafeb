package e2e_test

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"testing"
	"time"

	"github.com/imstream/imstream/gateway/imr"
	"github.com/imstream/imstream/internal/tools/testkit"
)

// TestGatewayTLS: with gateway.tls and a client CA, an IM server with a
// certificate of that CA speaks imr's protocol inside TLS (its subscribe
// makes its user online); one with another CA's certificate, and one
// speaking plain TCP, are closed at the handshake and counted.
func TestGatewayTLS(t *testing.T) {
	ours, theirs := testkit.NewCerts(t), testkit.NewCerts(t) // two CAs, each with a certificate
	s, gw, run := gatewayStack(t, "--gateway.tls.enabled", "--gateway.tls.cert_file", ours.CertFile,
		"--gateway.tls.key_file", ours.KeyFile, "--gateway.tls.client_ca_file", ours.CAFile)
	admin := adminOf(run())
	roots := x509.NewCertPool()
	pemCA, err := os.ReadFile(ours.CAFile)
	must(t, err)
	roots.AppendCertsFromPEM(pemCA)
	okCert, err := tls.LoadX509KeyPair(ours.CertFile, ours.KeyFile)
	must(t, err)
	badCert, err := tls.LoadX509KeyPair(theirs.CertFile, theirs.KeyFile)
	must(t, err)
	const refused = `imstream_gateway_refused_connections_total{reason="tls_handshake"}`
	testkit.Eventually(t, 10*time.Second, "the readiness probe (plain TCP) refused", func() bool {
		return metric(t, []string{admin}, refused) >= 1
	})
	base := metric(t, []string{admin}, refused)

	dial := func(cert tls.Certificate) (*tls.Conn, error) {
		return tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", gw,
			&tls.Config{RootCAs: roots, ServerName: "127.0.0.1", Certificates: []tls.Certificate{cert}})
	}
	ok, err := dial(okCert)
	must(t, err)
	defer ok.Close()
	_, err = ok.Write(imr.AppendFrame(nil, imr.Frame{Cmd: imr.CmdSubscribe, Body: sub(app, 4242, 1)}))
	must(t, err)
	testkit.Eventually(t, 30*time.Second, "the TLS client's user online", func() bool {
		on, _ := s.online(t, 4242)
		return on
	})

	// Another CA's certificate: TLS 1.3 reports the refusal at the first read.
	bad, err := dial(badCert)
	if err == nil {
		_, _ = bad.Write(imr.AppendFrame(nil, imr.Frame{Cmd: imr.CmdSubscribe, Body: sub(app, 4343, 1)}))
		_ = bad.SetReadDeadline(time.Now().Add(10 * time.Second)) // a bound, not an assertion: the gateway closes it
		_, err = bad.Read(make([]byte, 1))
		bad.Close()
	}
	if err == nil {
		t.Fatal("a client with another CA's certificate was served")
	}
	// Plain TCP: not a TLS client hello.
	plain, err := net.Dial("tcp", gw)
	must(t, err)
	_, _ = plain.Write(imr.AppendFrame(nil, imr.Frame{Cmd: imr.CmdSubscribe, Body: sub(app, 4444, 1)}))
	_ = plain.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = plain.Read(make([]byte, 1))
	plain.Close()
	if err == nil {
		t.Fatal("a plain TCP client was served")
	}
	testkit.Eventually(t, 10*time.Second, "both refusals counted", func() bool {
		return metric(t, []string{admin}, refused) >= base+2
	})
	for _, uid := range []int64{4343, 4444} {
		if on, _ := s.online(t, uid); on {
			t.Errorf("user %d of a refused connection is online", uid)
		}
	}
}
