package api

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"
)

var updateDoc = flag.Bool("update", false, "rewrite doc.go's route list from the operation table")

// docRoutes renders the table as doc.go lists it.
func docRoutes() string {
	var b strings.Builder
	for _, rt := range table {
		p := rt.docPath
		if p == "" {
			p = rt.pattern
		}
		if len(p) > 32 {
			fmt.Fprintf(&b, "//\t%-6s %s\n//\t%-6s %-32s %s\n", rt.method, p, "", "", rt.doc)
			continue
		}
		fmt.Fprintf(&b, "//\t%-6s %-32s %s\n", rt.method, p, rt.doc)
	}
	return b.String()
}

// splitDoc cuts doc.go around its route list: the lines after "# Routes"
// and its blank comment line, up to the next blank comment line.
func splitDoc(t *testing.T, doc string) (before, list, after string) {
	const head = "by go generate.\n//\n"
	i := strings.Index(doc, head)
	if i < 0 {
		t.Fatalf("doc.go has no route list after %q", head)
	}
	i += len(head)
	j := strings.Index(doc[i:], "\n//\n")
	if j < 0 {
		t.Fatal("doc.go's route list has no end")
	}
	return doc[:i], doc[i : i+j+1], doc[i+j+1:]
}

// TestDocRoutes fails when doc.go's route list is not the table's; go
// generate ./api rewrites it.
func TestDocRoutes(t *testing.T) {
	data, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	before, list, after := splitDoc(t, string(data))
	want := docRoutes()
	if list == want {
		return
	}
	if *updateDoc {
		if err := os.WriteFile("doc.go", []byte(before+want+after), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("doc.go's route list differs from the operation table (run go generate ./api):\n--- doc.go\n%s--- table\n%s", list, want)
}

// TestTableRoutesUnique: two entries for one method and pattern would
// leave one of them unreachable.
func TestTableRoutesUnique(t *testing.T) {
	seen := map[string]bool{}
	for _, rt := range table {
		k := rt.method + " " + rt.pattern
		if seen[k] {
			t.Errorf("route %s is in the table twice", k)
		}
		seen[k] = true
		if rt.doc == "" || rt.serve == nil {
			t.Errorf("route %s has no doc or no handler", k)
		}
	}
	if len(table) < 36 {
		t.Errorf("table has %d routes, want at least the 36 the api has had", len(table))
	}
}
