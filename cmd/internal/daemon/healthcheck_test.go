package daemon

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestHealthcheck(t *testing.T) {
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte(`{"status":"ok"}`))
	}))
	defer ok.Close()
	sick := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
	}))
	defer sick.Close()
	// A port nothing listens on: bind one, note it, close it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := ln.Addr().String()
	ln.Close()

	tests := []struct {
		name      string
		args      []string
		wantErr   string // "" means healthy
		wantUsage bool
	}{
		{"default address", nil, "", false},
		{"explicit url", []string{"-url=" + ok.URL + "/healthz"}, "", false},
		{"503", []string{"-url=" + sick.URL + "/healthz"}, "503", false},
		{"404", []string{"-url=" + ok.URL + "/nope"}, "404", false},
		{"nothing listening", []string{"-url=http://" + closedAddr + "/healthz"}, "unhealthy", false},
		{"bad flag", []string{"-bogus"}, "bogus", true},
		{"extra argument", []string{"now"}, "unexpected arguments", true},
		{"bad timeout", []string{"-timeout=0s"}, "must be positive", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := Healthcheck(context.Background(), "test", strings.TrimPrefix(ok.URL, "http://"), tt.args, &stdout, &stderr)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Healthcheck(%q) = %v, want nil", tt.args, err)
				}
				if !strings.Contains(stdout.String(), "healthy") {
					t.Errorf("stdout = %q, want it to say healthy", stdout.String())
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Healthcheck(%q) = %v, want an error containing %q", tt.args, err, tt.wantErr)
			}
			var usage *UsageError
			if got := errors.As(err, &usage); got != tt.wantUsage {
				t.Errorf("Healthcheck(%q) usage error = %v, want %v", tt.args, got, tt.wantUsage)
			}
		})
	}
}

func TestIsHealthcheck(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want bool
	}{
		{nil, false},
		{[]string{"healthcheck"}, true},
		{[]string{"healthcheck", "-url=x"}, true},
		{[]string{"-http-addr=:1", "healthcheck"}, false},
	} {
		if got := IsHealthcheck(tt.args); got != tt.want {
			t.Errorf("IsHealthcheck(%q) = %v, want %v", tt.args, got, tt.want)
		}
	}
}
