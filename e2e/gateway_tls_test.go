package e2e_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/imstream/imstream/gateway/imr"
	"github.com/imstream/imstream/internal/tools/testkit"
)

// pki writes a CA, a server certificate for 127.0.0.1 and a client
// certificate signed by the CA, and a client certificate signed by
// another CA, as PEM files in dir.
type pki struct {
	ca, serverCert, serverKey string
	clientOK, clientBad       tls.Certificate
	roots                     *x509.CertPool
}

func newPKI(t *testing.T, dir string) pki {
	t.Helper()
	key := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		must(t, err)
		return k
	}
	n := int64(0)
	issue := func(tmpl *x509.Certificate, parent *x509.Certificate, pub, signer any) *x509.Certificate {
		n++
		tmpl.SerialNumber = big.NewInt(n)
		tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
		if parent == nil {
			parent = tmpl
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
		must(t, err)
		c, err := x509.ParseCertificate(der)
		must(t, err)
		return c
	}
	ca := func(name string) (*x509.Certificate, *ecdsa.PrivateKey) {
		k := key()
		return issue(&x509.Certificate{Subject: pkix.Name{CommonName: name}, IsCA: true, BasicConstraintsValid: true,
			KeyUsage: x509.KeyUsageCertSign}, nil, &k.PublicKey, k), k
	}
	leaf := func(name string, usage x509.ExtKeyUsage, parent *x509.Certificate, signer *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
		k := key()
		return issue(&x509.Certificate{Subject: pkix.Name{CommonName: name}, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			KeyUsage: x509.KeyUsageDigitalSignature, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}, parent, &k.PublicKey, signer), k
	}
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		must(t, os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600))
		return p
	}
	keyDER := func(k *ecdsa.PrivateKey) []byte {
		b, err := x509.MarshalECPrivateKey(k)
		must(t, err)
		return b
	}
	caCert, caKey := ca("imstream test CA")
	otherCA, otherKey := ca("another CA")
	srv, srvKey := leaf("gateway", x509.ExtKeyUsageServerAuth, caCert, caKey)
	good, goodKey := leaf("im-1", x509.ExtKeyUsageClientAuth, caCert, caKey)
	bad, badKey := leaf("intruder", x509.ExtKeyUsageClientAuth, otherCA, otherKey)
	p := pki{
		ca:         write("ca.pem", "CERTIFICATE", caCert.Raw),
		serverCert: write("server.pem", "CERTIFICATE", srv.Raw),
		serverKey:  write("server.key", "EC PRIVATE KEY", keyDER(srvKey)),
		clientOK:   tls.Certificate{Certificate: [][]byte{good.Raw}, PrivateKey: goodKey},
		clientBad:  tls.Certificate{Certificate: [][]byte{bad.Raw}, PrivateKey: badKey},
		roots:      x509.NewCertPool(),
	}
	p.roots.AddCert(caCert)
	return p
}

// TestGatewayTLS: with gateway.tls and a client CA, an IM server with a
// certificate of that CA speaks imr's protocol inside TLS (its subscribe
// makes its user online); one with another CA's certificate, and one
// speaking plain TCP, are closed at the handshake and counted.
func TestGatewayTLS(t *testing.T) {
	p := newPKI(t, t.TempDir())
	s, gw, run := gatewayStack(t, "--gateway.tls.enabled", "--gateway.tls.cert_file", p.serverCert,
		"--gateway.tls.key_file", p.serverKey, "--gateway.tls.client_ca_file", p.ca)
	proc := run()
	admin := ""
	for i, a := range proc.Cmd.Args {
		if a == "--admin.listen" {
			admin = proc.Cmd.Args[i+1]
		}
	}
	const refused = `imstream_gateway_refused_connections_total{reason="tls_handshake"}`
	testkit.Eventually(t, 10*time.Second, "the readiness probe (plain TCP) refused", func() bool {
		return metric(t, []string{admin}, refused) >= 1
	})
	base := metric(t, []string{admin}, refused)

	dial := func(cert tls.Certificate) (*tls.Conn, error) {
		return tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", gw,
			&tls.Config{RootCAs: p.roots, ServerName: "127.0.0.1", Certificates: []tls.Certificate{cert}})
	}
	ok, err := dial(p.clientOK)
	must(t, err)
	defer ok.Close()
	_, err = ok.Write(imr.AppendFrame(nil, imr.Frame{Cmd: imr.CmdSubscribe, Body: sub(app, 4242, 1)}))
	must(t, err)
	testkit.Eventually(t, 30*time.Second, "the TLS client's user online", func() bool {
		on, _ := s.online(t, 4242)
		return on
	})

	// Another CA's certificate: TLS 1.3 reports the refusal at the first read.
	bad, err := dial(p.clientBad)
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
