// Package load reads imstream's configuration: a YAML file, IMSTREAM_*
// environment variables and flags, over the defaults (viper). It is apart
// from package config so that what imports the configuration types (the
// Kafka plumbing, and through it the ingest library IM servers embed) does
// not also import viper.
package load

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"

	"github.com/imstream/imstream/internal/plumbing/config"
)

// stringToIntMap decodes "a=1,b=2" (a flag's or an environment variable's
// value, with or without pflag's brackets) into a map[string]int.
func stringToIntMap(from, to reflect.Type, data any) (any, error) {
	if from.Kind() != reflect.String || to != reflect.TypeFor[map[string]int]() {
		return data, nil
	}
	out := map[string]int{}
	s := strings.Trim(strings.TrimSpace(data.(string)), "[]")
	if s == "" {
		return out, nil
	}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if !ok || err != nil {
			return nil, fmt.Errorf("%q: want key=integer", kv)
		}
		out[strings.TrimSpace(k)] = n
	}
	return out, nil
}

// Config returns config.Default() overlaid by the YAML file at path (if path is not
// empty), IMSTREAM_* environment variables and the flags that were set in fs
// (flag names are the keys, e.g. --kafka.brokers), then validated.
func Config(path string, fs *pflag.FlagSet) (config.Config, error) {
	v := viper.New()
	v.SetEnvPrefix("IMSTREAM")
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	// Bind every key so that env vars apply even when the file omits it.
	for _, k := range config.Keys() {
		if err := v.BindEnv(k); err != nil {
			return config.Config{}, err
		}
	}
	if path != "" {
		v.SetConfigFile(path)
		if err := v.ReadInConfig(); err != nil {
			return config.Config{}, fmt.Errorf("config: read %s: %w", path, err)
		}
	}
	if fs != nil {
		known := map[string]bool{}
		for _, k := range config.Keys() {
			known[k] = true
		}
		// Only flags that were set, and only configuration keys: a flag's
		// empty default must not hide the file or the environment.
		fs.Visit(func(f *pflag.Flag) {
			if !known[f.Name] {
				return
			}
			switch sv := f.Value.(type) {
			case pflag.SliceValue: // String() would give "[a,b]"
				v.Set(f.Name, sv.GetSlice())
			default:
				v.Set(f.Name, f.Value.String())
			}
		})
	}
	cfg := config.Default()
	hook := mapstructure.ComposeDecodeHookFunc(
		mapstructure.StringToTimeDurationHookFunc(),
		stringToIntMap,
		mapstructure.StringToWeakSliceHookFunc(","),
	)
	if err := v.Unmarshal(&cfg, viper.DecodeHook(hook), func(dc *mapstructure.DecoderConfig) {
		dc.ErrorUnused = true
	}); err != nil {
		return config.Config{}, fmt.Errorf("config: %w", err)
	}
	if err := cfg.Validate(); err != nil {
		return config.Config{}, err
	}
	return cfg, nil
}
