package main

import (
	"github.com/spf13/pflag"

	"github.com/imstream/imstream/internal/config"
	"github.com/imstream/imstream/internal/config/load"
)

// configFlags returns a flag set with --config and one string flag per
// configuration key; load.Config applies the ones that were set.
func configFlags(name string) (*pflag.FlagSet, *string) {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	path := fs.String("config", "", "YAML configuration file")
	for _, k := range config.Keys() {
		fs.String(k, "", "configuration key "+k)
	}
	return fs, path
}

// loadConfig parses args and loads the configuration.
func loadConfig(name string, args []string) (config.Config, error) {
	fs, path := configFlags(name)
	if err := fs.Parse(args); err != nil {
		return config.Config{}, err
	}
	return loadConfigFrom(*path, fs)
}

func loadConfigFrom(path string, fs *pflag.FlagSet) (config.Config, error) {
	return load.Config(path, fs)
}
