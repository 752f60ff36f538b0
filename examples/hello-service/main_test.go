package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestHealthz(t *testing.T) {
	srv := httptest.NewServer(newMux("v9.9.9"))
	defer srv.Close()

	resp, err := http.Get(srv.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status = %d, want 200", resp.StatusCode)
	}
}

func TestVersion(t *testing.T) {
	srv := httptest.NewServer(newMux("v9.9.9"))
	defer srv.Close()

	resp, err := http.Get(srv.URL + "/version")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]string
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	if body["version"] != "v9.9.9" {
		t.Fatalf("version = %q, want v9.9.9", body["version"])
	}
}

func TestNotFound(t *testing.T) {
	srv := httptest.NewServer(newMux("dev"))
	defer srv.Close()

	for _, path := range []string{"/nope", "/healthz/extra"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s: status = %d, want 404", path, resp.StatusCode)
		}
	}
}

func TestDefaultAddr(t *testing.T) {
	t.Setenv("PORT", "9123")
	if got := defaultAddr(); !strings.HasSuffix(got, ":9123") {
		t.Fatalf("defaultAddr() = %q", got)
	}
	t.Setenv("PORT", "")
	if got := defaultAddr(); got != ":8080" {
		t.Fatalf("defaultAddr() = %q, want :8080", got)
	}
}
