// Package cluster reads and checks the cluster configuration file
// (sharding.toml) that the router and storaged share. It decodes first,
// then validates, and names the first problem it finds.
package cluster

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/BurntSushi/toml"
)

// Config is sharding.toml.
type Config struct {
	// Replicas is how many shards hold each key; 0 means 1. More than the
	// number of shards is capped at it.
	Replicas int     `toml:"replicas"`
	Shards   []Shard `toml:"shards"`
}

// Shard is one [[shards]] entry, in the seed's format.
type Shard struct {
	Name    string `toml:"name"`
	Idx     int    `toml:"idx"`
	Address string `toml:"address"`
}

// Load reads and validates the file at path.
func Load(path string) (*Config, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	var c Config
	md, err := toml.Decode(string(raw), &c)
	if err != nil {
		return nil, fmt.Errorf("config file %s: %w", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return nil, fmt.Errorf("config file %s: unknown keys: %s", path, strings.Join(keys, ", "))
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("config file %s: %w", path, err)
	}
	return &c, nil
}

// Validate reports the first problem in the configuration.
func (c *Config) Validate() error {
	if len(c.Shards) == 0 {
		return errors.New("no [[shards]] entries")
	}
	names := map[string]bool{}
	idxs := map[int]string{}
	for i, s := range c.Shards {
		switch {
		case s.Name == "":
			return fmt.Errorf("shard #%d: empty name", i+1)
		case names[s.Name]:
			return fmt.Errorf("shard %q: duplicate name", s.Name)
		case s.Idx < 0:
			return fmt.Errorf("shard %q: negative idx %d", s.Name, s.Idx)
		case idxs[s.Idx] != "":
			return fmt.Errorf("shard %q: duplicate idx %d (also %q)", s.Name, s.Idx, idxs[s.Idx])
		case s.Address == "":
			return fmt.Errorf("shard %q: empty address", s.Name)
		}
		if _, _, err := net.SplitHostPort(strings.TrimPrefix(strings.TrimPrefix(s.Address, "http://"), "https://")); err != nil {
			return fmt.Errorf("shard %q: address %q is not host:port", s.Name, s.Address)
		}
		names[s.Name] = true
		idxs[s.Idx] = s.Name
	}
	if c.Replicas < 0 {
		return fmt.Errorf("replicas = %d: must be at least 1", c.Replicas)
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	c.Replicas = min(c.Replicas, len(c.Shards))
	return nil
}

// Shard returns the entry called name.
func (c *Config) Shard(name string) (Shard, error) {
	for _, s := range c.Shards {
		if s.Name == name {
			return s, nil
		}
	}
	known := make([]string, len(c.Shards))
	for i, s := range c.Shards {
		known[i] = s.Name
	}
	return Shard{}, fmt.Errorf("unknown shard %q (config has %s)", name, strings.Join(known, ", "))
}
