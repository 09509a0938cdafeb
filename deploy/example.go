package deploy

import (
	_ "embed"
	"strings"
	"sync"
)

// ExampleConfig is imstream.example.yaml: every configuration key with its
// default and, in the comment on its line, what it does.
//
//go:embed imstream.example.yaml
var ExampleConfig string

// KeyDescriptions maps each key of ExampleConfig ("kafka.tls.enabled") to
// the comment on its line; the CLI shows it as the key's flag help. It is
// read once (every command's flags ask for it); callers must not change
// the map.
var KeyDescriptions = sync.OnceValue(keyDescriptions)

func keyDescriptions() map[string]string {
	out := map[string]string{}
	var path []string
	for _, line := range strings.Split(ExampleConfig, "\n") {
		body := strings.TrimSpace(line)
		if body == "" || strings.HasPrefix(body, "#") {
			continue
		}
		key, rest, ok := strings.Cut(body, ":")
		if !ok {
			continue
		}
		depth := (len(line) - len(strings.TrimLeft(line, " "))) / 2
		path = append(path[:min(depth, len(path))], key)
		if _, comment, ok := strings.Cut(rest, " # "); ok {
			out[strings.Join(path, ".")] = strings.TrimSpace(comment)
		}
	}
	return out
}
