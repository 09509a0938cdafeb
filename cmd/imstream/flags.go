package main

import (
	"fmt"
	"time"

	"github.com/spf13/pflag"

	"github.com/imstream/imstream/deploy"
	"github.com/imstream/imstream/internal/plumbing/config"
	"github.com/imstream/imstream/internal/plumbing/config/load"
)

// configFlags adds --config and one typed flag per configuration key, with
// its default, to fs; load.Config applies the ones that were set.
func configFlags(fs *pflag.FlagSet) *string {
	path := fs.String("config", "", "YAML configuration file")
	about := deploy.KeyDescriptions()
	for _, kv := range config.Defaults() {
		help := about[kv.Key]
		if help == "" {
			help = "configuration key " + kv.Key // TestFlagDescriptions keeps this from happening
		}
		switch v := kv.Value.(type) {
		case string:
			fs.String(kv.Key, v, help)
		case int:
			fs.Int(kv.Key, v, help)
		case int64:
			fs.Int64(kv.Key, v, help)
		case bool:
			fs.Bool(kv.Key, v, help)
		case float64:
			fs.Float64(kv.Key, v, help)
		case time.Duration:
			fs.Duration(kv.Key, v, help)
		case []string:
			fs.StringSlice(kv.Key, v, help)
		case []int64:
			fs.Int64Slice(kv.Key, v, help)
		case map[string]int:
			fs.StringToInt(kv.Key, v, help+" (key=n,key=n)")
		default:
			panic(fmt.Sprintf("configuration key %s: no flag type for %T", kv.Key, v))
		}
	}
	fs.SortFlags = true
	return path
}

// loadConfig loads the configuration from the file, the environment and
// the flags of fs that were set.
func loadConfig(path string, fs *pflag.FlagSet) (config.Config, error) {
	return load.Config(path, fs)
}
