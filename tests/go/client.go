// A webhook client built on Go's net/http, as the Kubernetes API server calls webhooks.
// Used by tests/go_client.rs:
//
//	client early URL CA N h2|h1   POSTs a 4 MiB body to /validate, a small one to /nowhere and
//	                              PUTs to /validate, N times each; prints one line per case:
//	                              "<want> <got>/<N>" and the first error seen
//	client drain URL CA BODY      8 keep-alive clients posting BODY to /validate until the
//	                              server refuses connections; prints "answered N lost M" and
//	                              each lost request's error
package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"
)

func client(caFile string, h2 bool) *http.Client {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		panic(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	tr := &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: pool, ServerName: "localhost"},
		ForceAttemptHTTP2:   h2,
		MaxIdleConnsPerHost: 8,
	}
	if !h2 {
		// A non-nil empty map turns HTTP/2 off.
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

func early(base, ca string, n int, h2 bool) int {
	c := client(ca, h2)
	big := bytes.Repeat([]byte(" "), 4*1024*1024)
	small := []byte(`{"apiVersion":"admission.k8s.io/v1"}`)
	cases := []struct {
		method, path string
		body         []byte
		want         int
	}{
		{"POST", "/validate", big, 413},
		{"POST", "/nowhere", small, 404},
		{"PUT", "/validate", small, 405},
	}
	failed := 0
	for _, k := range cases {
		got := 0
		first := ""
		for i := 0; i < n; i++ {
			req, _ := http.NewRequest(k.method, base+k.path, bytes.NewReader(k.body))
			req.Header.Set("Content-Type", "application/json")
			resp, err := c.Do(req)
			if err != nil {
				if first == "" {
					first = err.Error()
				}
				continue
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == k.want && (resp.ProtoMajor == 2) == h2 {
				got++
			} else if first == "" {
				first = fmt.Sprintf("%s %d", resp.Proto, resp.StatusCode)
			}
		}
		fmt.Printf("%d %d/%d %s\n", k.want, got, n, first)
		if got != n {
			failed++
		}
	}
	return failed
}

func drain(base, ca, bodyFile string) int {
	body, err := os.ReadFile(bodyFile)
	if err != nil {
		panic(err)
	}
	c := client(ca, false)
	var mu sync.Mutex
	answered, lost := 0, []string{}
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				req, _ := http.NewRequest("POST", base+"/validate", bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				resp, err := c.Do(req)
				if err != nil {
					// The dial failed: refused once the listener is closed, or reset when it
					// closed during this connection's TCP handshake (never accepted). Nothing
					// was written. Done.
					var op *net.OpError
					if errors.Is(err, syscall.ECONNREFUSED) || (errors.As(err, &op) && op.Op == "dial") {
						return
					}
					mu.Lock()
					lost = append(lost, err.Error())
					mu.Unlock()
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				mu.Lock()
				if resp.StatusCode == 200 {
					answered++
				} else {
					lost = append(lost, resp.Status)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	fmt.Printf("answered %d lost %d\n", answered, len(lost))
	for _, l := range lost {
		fmt.Println(l)
	}
	return len(lost)
}

func main() {
	if len(os.Args) < 5 {
		fmt.Fprintln(os.Stderr, "usage: client early URL CA N h2|h1 | client drain URL CA BODY")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "early":
		n, _ := strconv.Atoi(os.Args[4])
		os.Exit(early(os.Args[2], os.Args[3], n, len(os.Args) > 5 && os.Args[5] == "h2"))
	case "drain":
		if drain(os.Args[2], os.Args[3], os.Args[4]) > 0 {
			os.Exit(1)
		}
	}
}
