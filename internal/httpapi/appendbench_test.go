package httpapi_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"buildlog/internal/httpapi"
	"buildlog/internal/testkit"
)

// BenchmarkAppendHTTP is the fleet's request, end to end over loopback:
// producers on builds of their own append 10-entry JSON batches with
// first_offset, each over a keep-alive connection, to a real API on a
// SQLite file. For profiling the append path's allocations and CPU:
//
//	go test -run '^$' -bench AppendHTTP -benchmem -memprofile mem.out ./internal/httpapi
func BenchmarkAppendHTTP(b *testing.B) {
	st := testkit.OpenSQLite(b, b.TempDir())
	secret, err := st.Secret(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	api := httpapi.New(httpapi.Config{Store: st, AdminKey: adminKey, Secret: secret, Keepalive: time.Minute})
	ts := httptest.NewServer(api)
	defer ts.Close()
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1024}}
	var next atomic.Int64
	b.SetParallelism(32)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		id := fmt.Sprintf("tb_bench_%d", next.Add(1))
		post := func(path, body string) {
			req, _ := http.NewRequest("POST", ts.URL+path, bytes.NewBufferString(body))
			req.Header.Set("Authorization", "Bearer "+adminKey)
			req.Header.Set("Content-Type", "application/json")
			res, err := hc.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode/100 != 2 {
				b.Errorf("%s: %d", path, res.StatusCode)
			}
		}
		post("/v1/templates/tmpl_bench/builds", `{"build_id":"`+id+`"}`)
		off := 0
		for pb.Next() {
			var body bytes.Buffer
			fmt.Fprintf(&body, `{"first_offset":%d,"entries":[`, off)
			for i := range 10 {
				if i > 0 {
					body.WriteByte(',')
				}
				fmt.Fprintf(&body, `{"level":"info","phase":"install","source":"apt","message":"Setting up libfoo%d (1.2.%d-1) ..."}`, i, off+i)
			}
			body.WriteString("]}")
			post("/v1/templates/builds/"+id+"/logs", body.String())
			off += 10
		}
	})
}
