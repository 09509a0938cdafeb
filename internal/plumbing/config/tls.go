package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// TLS configures a TLS client connection.
type TLS struct {
	Enabled            bool   `mapstructure:"enabled"`              // default false
	CAFile             string `mapstructure:"ca_file"`              // default "": system roots
	CertFile           string `mapstructure:"cert_file"`            // default "": no client certificate
	KeyFile            string `mapstructure:"key_file"`             // default ""
	ServerName         string `mapstructure:"server_name"`          // default "": the host dialled
	InsecureSkipVerify bool   `mapstructure:"insecure_skip_verify"` // default false; for tests only
}

// Config builds the *tls.Config, or nil when TLS is disabled.
func (t TLS) Config() (*tls.Config, error) {
	if !t.Enabled {
		return nil, nil
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName, InsecureSkipVerify: t.InsecureSkipVerify}
	if t.CAFile != "" {
		pool, err := certPool("ca_file", t.CAFile)
		if err != nil {
			return nil, err
		}
		c.RootCAs = pool
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		return nil, errors.New("cert_file and key_file go together")
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("cert_file/key_file: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// SASL configures Kafka SASL authentication.
type SASL struct {
	Mechanism string `mapstructure:"mechanism"` // default "": none; PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512
	Username  string `mapstructure:"username"`  // default ""
	Password  string `mapstructure:"password"`  // default ""; never logged
}

func (s SASL) validate(bad func(key, format string, a ...any)) {
	switch s.Mechanism {
	case "":
	case "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512":
		if s.Username == "" {
			bad("kafka.sasl.username", "required with kafka.sasl.mechanism %s", s.Mechanism)
		}
	default:
		bad("kafka.sasl.mechanism", "must be PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512, got %q", s.Mechanism)
	}
}

// ServerTLS configures a TLS listener (the gateway's).
type ServerTLS struct {
	Enabled  bool   `mapstructure:"enabled"`   // default false
	CertFile string `mapstructure:"cert_file"` // the server's certificate chain (PEM)
	KeyFile  string `mapstructure:"key_file"`  // its key (PEM)
	// ClientCAFile, when set, makes the listener require a client
	// certificate signed by one of these CAs (mutual TLS).
	ClientCAFile string `mapstructure:"client_ca_file"`
}

// Config builds the listener's *tls.Config, or nil when TLS is disabled.
func (t ServerTLS) Config() (*tls.Config, error) {
	if !t.Enabled {
		return nil, nil
	}
	if t.CertFile == "" || t.KeyFile == "" {
		return nil, errors.New("cert_file and key_file are required")
	}
	cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("cert_file/key_file: %w", err)
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	if t.ClientCAFile != "" {
		pool, err := certPool("client_ca_file", t.ClientCAFile)
		if err != nil {
			return nil, err
		}
		c.ClientCAs, c.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return c, nil
}

// certPool reads the PEM certificates of the file the key names.
func certPool(key, path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s %s: no PEM certificate", key, path)
	}
	return pool, nil
}
