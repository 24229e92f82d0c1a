package main

import (
	"strings"
	"testing"
)

func TestFilters(t *testing.T) {
	type item struct {
		name   string
		labels map[string]string
	}
	items := []item{
		{"docker.io/library/alpine:3", map[string]string{"env": "prod", "a.b/c": "x"}},
		{"lab.local/app:1", map[string]string{"env": "dev"}},
		{"lab.local/app:2", nil},
	}
	field := func(i item, p []string) (string, bool) {
		if len(p) == 1 && p[0] == "name" {
			return i.name, true
		}
		return labelField(i.labels, p)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "docker.io/library/alpine:3 lab.local/app:1 lab.local/app:2"},
		{[]string{"name~=^lab\\."}, "lab.local/app:1 lab.local/app:2"},
		{[]string{`labels."env"==prod`}, "docker.io/library/alpine:3"},
		{[]string{`labels."a.b/c"`}, "docker.io/library/alpine:3"},
		{[]string{"labels.env"}, "docker.io/library/alpine:3 lab.local/app:1"},
		{[]string{"labels.env!=prod"}, "lab.local/app:1 lab.local/app:2"},
		{[]string{"name~=app,labels.env==dev"}, "lab.local/app:1"},
		{[]string{"name==lab.local/app:2", "labels.env==prod"}, "docker.io/library/alpine:3 lab.local/app:2"},
		{[]string{`name=="lab.local/app:1"`}, "lab.local/app:1"},
	} {
		fs, err := parseFilters(tc.args)
		if err != nil {
			t.Fatalf("%q: %v", tc.args, err)
		}
		var got []string
		for _, i := range filterItems(fs, items, field) {
			got = append(got, i.name)
		}
		if strings.Join(got, " ") != tc.want {
			t.Errorf("%q: got %v, want %s", tc.args, got, tc.want)
		}
	}
	for _, bad := range []string{"name~=(", `labels."env`, "name=x", "=x", "name==a b,"} {
		_, err := parseFilters([]string{bad})
		if err == nil || !isUsage(err) || !strings.Contains(err.Error(), "filter") {
			t.Errorf("%q: err = %v, want a usage error naming the filter", bad, err)
		}
	}
	fs, _ := parseFilters([]string{"nmae==x"})
	if err := fs.check(func(p []string) bool { return p[0] == "name" }); err == nil || !strings.Contains(err.Error(), "unknown field nmae") {
		t.Errorf("unknown field: %v", err)
	}
}
