package main

import (
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// benchFetch: cold fetch of each image (content only, no unpack) by casfs,
// ctr and skopeo from the same local registry, the large one also against
// the machine's limit (measureLimit); peak RSS of each client.
func benchFetch(e *env) ([]Row, error) {
	set, err := e.loadImages()
	if err != nil {
		return nil, err
	}
	var rows []Row
	for _, c := range []struct {
		name, repo string
		large      bool
		goal       string
	}{
		{"realistic", refRealistic, false, "<= 1.0x skopeo"},
		{"large", refLarge, true, "<= 0.5x skopeo"},
	} {
		ref := set.reg.ref(c.repo, "latest")
		var ours, ctrs, skopeos []measured
		// Even the large case runs three times here: a round of it takes
		// about 20 s, and one slow disk moment took casfs's fetch from
		// 2.1 to 4.9 s in a round of two.
		for i := 0; i < 3; i++ {
			root := filepath.Join(e.work, "fetch-casfs")
			dropCaches()
			m, err := runTimed(10*time.Minute, e.casfs, "--root", root, "content", "fetch", "--plain-http", "-q", ref)
			os.RemoveAll(root)
			if err != nil {
				return nil, err
			}
			ours = append(ours, m)

			cd, err := startContainerd(e.work)
			if err != nil {
				return nil, err
			}
			dropCaches()
			m, err = cd.run(10*time.Minute, "content", "fetch", "--plain-http", ref)
			cd.stop()
			if err != nil {
				return nil, err
			}
			ctrs = append(ctrs, m)

			dir := filepath.Join(e.work, "fetch-skopeo")
			dropCaches()
			m, err = runTimed(10*time.Minute, "skopeo", "--insecure-policy", "copy", "-q", "--src-tls-verify=false",
				"docker://"+ref, "oci:"+dir+":latest")
			os.RemoveAll(dir)
			if err != nil {
				return nil, err
			}
			skopeos = append(skopeos, m)
			logf("fetch %s run %d: casfs %s, ctr %s, skopeo %s", c.name, i+1, secs(ours[i].wall), secs(ctrs[i].wall), secs(m.wall))
		}
		o, b, k := best(ours), best(ctrs), best(skopeos)
		n := len(ours)
		rows = append(rows,
			Row{
				Name:     fmt.Sprintf("fetch %s %s (cold, best of %d) vs skopeo", c.name, mib(set.imageBy(c.repo).compressed()), n),
				Ours:     secs(o.wall),
				Baseline: secs(k.wall) + " skopeo",
				Ratio:    ratio(o.wall, k.wall),
				Goal:     c.goal,
			},
			Row{
				Name:     fmt.Sprintf("fetch %s (cold, best of %d) vs containerd", c.name, n),
				Ours:     secs(o.wall),
				Baseline: secs(b.wall) + " ctr",
				Ratio:    ratio(o.wall, b.wall),
				Goal:     "-",
			},
		)
		if c.large {
			l, err := e.measureLimit(set, c.repo, set.imageBy(c.repo), false, n)
			if err != nil {
				return nil, err
			}
			rows = append(rows, limitRow(fmt.Sprintf("fetch large vs the machine's limit (cold, best of %d)", n), o.wall, l, ">= 0.75x"))
			rows = append(rows, Row{
				Name:     "fetch large: peak RSS of the client",
				Ours:     mib(o.maxRSS),
				Baseline: mib(k.maxRSS) + " skopeo, " + mib(b.maxRSS) + " ctr client",
				Ratio:    "-",
				Goal:     "<= 128 MiB",
			})
		}
	}
	return rows, nil
}

func (s *images) imageBy(repo string) *image {
	if repo == refLarge {
		return s.large
	}
	return s.realistic
}
