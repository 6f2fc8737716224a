package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-kvdb/go-kvdb/cmd/internal/daemon"
	"github.com/go-kvdb/go-kvdb/storage"
)

// runKeygen runs `router keygen args…` and returns its stdout.
func runKeygen(t testing.TB, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := run(context.Background(), append([]string{"keygen"}, args...), &out, &errOut)
	return out.String(), err
}

func TestKeygenPrintsTheSecretOnce(t *testing.T) {
	file := filepath.Join(t.TempDir(), "auth.toml")
	out, err := runKeygen(t, "-auth-file="+file, "-name=ci", "-role=writer", "-topics=ci-*, shared")
	if err != nil {
		t.Fatalf("keygen = %v", err)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "kvdb_") || strings.Contains(lines[0], " ") {
		t.Fatalf("keygen stdout = %q, want the secret alone on one line", out)
	}
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte(lines[0])) {
		t.Errorf("the auth file holds the secret")
	}
	for _, want := range []string{`name = "ci"`, `role = "writer"`, `"ci-*"`, `"shared"`, "hash = ", "salt = "} {
		if !bytes.Contains(raw, []byte(want)) {
			t.Errorf("auth file lacks %s:\n%s", want, raw)
		}
	}
	if _, err := runKeygen(t, "-auth-file="+file, "-name=ci", "-role=reader"); err == nil || !strings.Contains(err.Error(), "exists already") {
		t.Errorf("keygen of a duplicate name = %v, want an error saying it exists", err)
	}
	for _, args := range [][]string{
		{"-name=x", "-role=reader"},
		{"-auth-file=" + file, "-role=reader"},
		{"-auth-file=" + file, "-name=x", "-role=owner"},
		{"-auth-file=" + file, "-name=x", "-role=reader", "extra"},
		{"-auth-file=" + file, "-name=x", "-role=reader", "-topics=["},
		{"-auth-file=" + file, "-name=has space", "-role=reader"},
	} {
		if _, err := runKeygen(t, args...); err == nil {
			t.Errorf("keygen %v = nil, want an error", args)
		}
	}
}

func TestRouterRefusesOpenNonLoopback(t *testing.T) {
	db := "-db-location=" + filepath.Join(t.TempDir(), "kvdb.db")
	var out bytes.Buffer
	err := run(context.Background(), []string{"-http-addr=0.0.0.0:0", db}, &out, &out)
	var usage *daemon.UsageError
	if !errors.As(err, &usage) || !strings.Contains(err.Error(), "-insecure") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("open router on 0.0.0.0 = %v, want a one-line usage error naming -insecure", err)
	}
	// With -insecure it starts, and warns.
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	logs := &syncBuffer{}
	go func() { done <- run(ctx, []string{"-http-addr=" + addr, db, "-insecure", "-cache-size=0"}, logs, logs) }()
	waitHealthy(t, "http://"+addr, nil)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run = %v", err)
	}
	if !strings.Contains(logs.String(), "NO AUTHENTICATION") {
		t.Errorf("an open router did not warn; log:\n%s", logs)
	}
}

func TestRouterWithAuthFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "auth.toml")
	admin, err := runKeygen(t, "-auth-file="+file, "-name=admin", "-role=admin")
	if err != nil {
		t.Fatal(err)
	}
	admin = strings.TrimSpace(admin)
	addr := freeAddr(t)
	startRouter(t, addr, "-db-location="+filepath.Join(dir, "kvdb.db"), "-cache-size=0", "-auth-file="+file)
	base := "http://" + addr
	if code := status(t, "GET", base+"/api/v1/topics", ""); code != 401 {
		t.Errorf("GET topics without a key = %d, want 401", code)
	}
	if code := status(t, "GET", base+"/api/v1/topics", admin); code != 200 {
		t.Errorf("GET topics with the admin key = %d, want 200", code)
	}
	// A key added while the router runs works after SIGHUP.
	reader, err := runKeygen(t, "-auth-file="+file, "-name=reader", "-role=reader")
	if err != nil {
		t.Fatal(err)
	}
	reader = strings.TrimSpace(reader)
	if code := status(t, "GET", base+"/api/v1/topics", reader); code != 401 {
		t.Errorf("GET topics with a key not yet loaded = %d, want 401", code)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for status(t, "GET", base+"/api/v1/topics", reader) != 200 {
		if time.Now().After(deadline) {
			t.Fatalf("the new key never worked after SIGHUP")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code := status(t, "POST", base+"/api/v1/topics", reader); code != 403 {
		t.Errorf("POST topics with a reader key = %d, want 403", code)
	}
}

func TestRouterServesTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, pool := selfSigned(t, dir)
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	logs := &syncBuffer{}
	go func() {
		done <- run(ctx, []string{"-http-addr=" + addr, "-db-location=" + filepath.Join(dir, "kvdb.db"), "-cache-size=0",
			"-tls-cert=" + certFile, "-tls-key=" + keyFile}, logs, logs)
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run = %v", err)
		}
		if t.Failed() {
			t.Logf("router log:\n%s", logs)
		}
	}()
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	waitHealthy(t, "https://"+addr, hc)
	resp, err := hc.Post("https://"+addr+"/api/v1/topics", "application/json", strings.NewReader(`{"name":"over-tls"}`))
	if err != nil {
		t.Fatalf("POST over TLS: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 201 {
		t.Errorf("POST over TLS = %d, want 201", resp.StatusCode)
	}
	// Plain HTTP to the TLS port gets nothing useful.
	if resp, err := http.Get("http://" + addr + "/api/v1/topics"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Errorf("plain HTTP to the TLS listener = 200")
		}
	}
	// A half pair is a usage error.
	err = run(context.Background(), []string{"-http-addr=" + freeAddr(t), "-tls-cert=" + certFile}, &bytes.Buffer{}, &bytes.Buffer{})
	var usage *daemon.UsageError
	if !errors.As(err, &usage) {
		t.Errorf("-tls-cert without -tls-key = %v, want a usage error", err)
	}
}

func TestSecurityFlagErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.keys")
	os.WriteFile(bad, []byte("not hex\n"), 0o600)
	for _, args := range [][]string{
		{"-rate-limit=-1"},
		{"-max-concurrent=-1"},
		{"-body-timeout=0s"},
		{"-auth-file=" + filepath.Join(dir, "missing.toml")},
		{"-encryption-key-file=" + bad},
		{"-tls-ca=" + bad},
		{"-cluster-token-file=" + bad}, // 7 bytes: too short
	} {
		err := run(context.Background(), append([]string{"-http-addr=" + freeAddr(t), "-db-location=" + filepath.Join(dir, "kvdb.db")}, args...), &bytes.Buffer{}, &bytes.Buffer{})
		var usage *daemon.UsageError
		if !errors.As(err, &usage) {
			t.Errorf("router %v = %v, want a usage error", args, err)
		}
	}
}

func status(t testing.TB, method, url, secret string) int {
	t.Helper()
	var body *strings.Reader
	if method == "POST" {
		body = strings.NewReader(`{"name":"t"}`)
	} else {
		body = strings.NewReader("")
	}
	req, _ := http.NewRequest(method, url, body)
	if method == "POST" {
		req.Header.Set("Content-Type", "application/json")
	}
	if secret != "" {
		req.Header.Set("Authorization", "Bearer "+secret)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	var eb map[string]any
	json.NewDecoder(resp.Body).Decode(&eb)
	return resp.StatusCode
}

func waitHealthy(t testing.TB, base string, hc *http.Client) {
	t.Helper()
	if hc == nil {
		hc = http.DefaultClient
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := hc.Get(base + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s/healthz never answered 200: %v", base, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// selfSigned writes a self-signed certificate for 127.0.0.1 and its key,
// and returns their files and a pool that trusts the certificate.
func selfSigned(t testing.TB, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "kvdb test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

func TestRouterSendsTheClusterToken(t *testing.T) {
	dir := t.TempDir()
	const token = "a-cluster-token-of-enough-bytes"
	st, err := storage.Open(filepath.Join(dir, "sh-1.db"), storage.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(storage.RequireToken(storage.NewHandler(st, nil), token))
	t.Cleanup(func() {
		srv.Close()
		st.Close()
	})
	config := filepath.Join(dir, "sharding.toml")
	os.WriteFile(config, []byte("[[shards]]\nname = \"sh-1\"\nidx = 0\naddress = \""+srv.URL+"\"\n"), 0o600)
	tokenFile := filepath.Join(dir, "token")
	os.WriteFile(tokenFile, []byte(token), 0o600)

	t.Run("with the token", func(t *testing.T) {
		addr := freeAddr(t)
		startRouter(t, addr, "-config-file="+config, "-cache-size=0", "-cluster-token-file="+tokenFile)
		if code := status(t, "POST", "http://"+addr+"/api/v1/topics", ""); code != 201 {
			t.Errorf("POST topic through a router with the token = %d, want 201", code)
		}
	})
	t.Run("without", func(t *testing.T) {
		t.Setenv(daemon.TokenEnv, "")
		addr := freeAddr(t)
		startRouter(t, addr, "-config-file="+config, "-cache-size=0")
		req, _ := http.NewRequest("GET", "http://"+addr+"/api/v1/topics/t", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var eb struct {
			Error struct{ Code, Message string }
		}
		json.NewDecoder(resp.Body).Decode(&eb)
		if resp.StatusCode < 500 || !strings.Contains(eb.Error.Message, "cluster token") {
			t.Errorf("GET through a router without the token = %d %+v, want a 5xx naming the cluster token", resp.StatusCode, eb)
		}
	})
}

func TestRouterReachesStoragedOverTLS(t *testing.T) {
	dir := t.TempDir()
	st, err := storage.Open(filepath.Join(dir, "sh-1.db"), storage.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewTLSServer(storage.NewHandler(st, nil))
	t.Cleanup(func() {
		srv.Close()
		st.Close()
	})
	ca := filepath.Join(dir, "ca.pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600)
	config := filepath.Join(dir, "sharding.toml")
	os.WriteFile(config, []byte("[[shards]]\nname = \"sh-1\"\nidx = 0\naddress = \""+srv.URL+"\"\n"), 0o600)
	if !strings.HasPrefix(srv.URL, "https://") {
		t.Fatalf("test server URL %s is not https", srv.URL)
	}
	addr := freeAddr(t)
	startRouter(t, addr, "-config-file="+config, "-cache-size=0", "-tls-ca="+ca)
	if code := status(t, "POST", "http://"+addr+"/api/v1/topics", ""); code != 201 {
		t.Errorf("POST topic through a router reaching storaged over TLS = %d, want 201", code)
	}
}

func TestRouterAuditLogFile(t *testing.T) {
	dir := t.TempDir()
	audit := filepath.Join(dir, "audit.log")
	addr := freeAddr(t)
	startRouter(t, addr, "-db-location="+filepath.Join(dir, "kvdb.db"), "-cache-size=0", "-audit-log="+audit)
	if code := status(t, "POST", "http://"+addr+"/api/v1/topics", ""); code != 201 {
		t.Fatalf("POST topic = %d", code)
	}
	raw, err := os.ReadFile(audit)
	if err != nil {
		t.Fatal(err)
	}
	var line map[string]any
	if err := json.Unmarshal(bytes.TrimSpace(raw), &line); err != nil || line["event"] != "mutation" || line["status"] != 201.0 || line["route"] != "/api/v1/topics" {
		t.Errorf("audit log = %s (%v), want one mutation line with status 201", raw, err)
	}
}
