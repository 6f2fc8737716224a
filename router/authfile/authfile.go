package authfile

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/go-kvdb/go-kvdb/router/schema"
)

// The auth file (-auth-file) is TOML written by `router keygen` and read
// by the router at start and on SIGHUP:
//
//	# requests per second per key of a role; overrides -rate-limit (0: none)
//	[role_rate_limits]
//	reader = 20
//
//	[[keys]]
//	name = "ci"
//	id = "5f0c8e0f2a9d1b44"        # public: the secret's prefix names it
//	role = "writer"                # admin, writer or reader
//	topics = ["ci-*", "shared"]    # path.Match patterns; none: every topic
//	salt = "…"                     # 16 random bytes, hex
//	hash = "…"                     # SHA-256(salt | secret), hex
//	rate_limit = 50                # optional: overrides the role and -rate-limit
//	created_at = "2025-01-02T03:04:05Z"
//
// A secret is "kvdb_" + id + "_" + 32 random bytes in base64url. It is shown
// once by keygen and never stored: the file holds a salted SHA-256 of it.
// A fast hash is right here because the secret is a 256-bit random value,
// not a password: nobody can search that space however fast the hash, so a
// slow KDF (bcrypt, argon2) would only cost every request time for nothing.
// The salt keeps equal files from sharing hashes and defeats precomputation.
// The id lets the router find the one key to check, so a request costs one
// hash whatever the number of keys.

// Role is what an API key may do.
type Role string

// The roles, each allowed what the one before is and more.
const (
	RoleReader Role = "reader" // read topics and contexts, search
	RoleWriter Role = "writer" // and create, change and delete them, chat
	RoleAdmin  Role = "admin"  // and the cluster and admin routes
)

func (r Role) valid() bool { return r == RoleReader || r == RoleWriter || r == RoleAdmin }

// allows reports whether the role grants need.
func (r Role) Allows(need Access) bool {
	switch r {
	case RoleAdmin:
		return true
	case RoleWriter:
		return need <= AccessWrite
	case RoleReader:
		return need <= AccessRead
	}
	return false
}

// APIKey is one [[keys]] entry of the auth file.
type APIKey struct {
	Name   string   `toml:"name"`
	ID     string   `toml:"id"`
	Role   Role     `toml:"role"`
	Topics []string `toml:"topics,omitempty"`
	Salt   string   `toml:"salt"`
	Hash   string   `toml:"hash"`
	// RateLimit is requests per second (burst the same); nil: the role's
	// limit, else -rate-limit; 0: no limit.
	RateLimit *int   `toml:"rate_limit,omitempty"`
	CreatedAt string `toml:"created_at,omitempty"`
}

type File struct {
	RoleRateLimits map[Role]int `toml:"role_rate_limits"`
	Keys           []APIKey     `toml:"keys"`
}

// Auth is a validated set of API keys. It is immutable: a reload builds a
// new one and swaps it in whole (Router.SetAuth).
type Auth struct {
	byID      map[string]*Key
	roleRates map[Role]int
}

// Key is an APIKey decoded for checking.
type Key struct {
	name   string
	role   Role
	topics []string // nil: every topic
	salt   []byte
	hash   []byte
	rate   *int
}

const (
	secretPrefix = "kvdb_"
	keyIDBytes   = 8
	secretBytes  = 32
	saltBytes    = 16
)

// LoadAuthFile reads and validates the auth file at path.
func LoadAuthFile(file string) (*Auth, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("auth file: %w", err)
	}
	a, err := parseAuth(raw)
	if err != nil {
		return nil, fmt.Errorf("auth file %s: %w", file, err)
	}
	return a, nil
}

func Decode(raw []byte) (*File, error) {
	var f File
	md, err := toml.NewDecoder(bytes.NewReader(raw)).Decode(&f)
	if err != nil {
		return nil, err
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return nil, fmt.Errorf("unknown keys: %s", strings.Join(keys, ", "))
	}
	return &f, nil
}

func parseAuth(raw []byte) (*Auth, error) {
	f, err := Decode(raw)
	if err != nil {
		return nil, err
	}
	a := &Auth{byID: map[string]*Key{}, roleRates: map[Role]int{}}
	for role, n := range f.RoleRateLimits {
		if !role.valid() {
			return nil, fmt.Errorf("role_rate_limits: unknown role %q (admin, writer or reader)", role)
		}
		if n < 0 {
			return nil, fmt.Errorf("role_rate_limits.%s: %d must not be negative", role, n)
		}
		a.roleRates[role] = n
	}
	names := map[string]bool{}
	for i, k := range f.Keys {
		where := fmt.Sprintf("keys[%d] (%q)", i, k.Name)
		if err := checkKeyName(k.Name); err != nil {
			return nil, fmt.Errorf("keys[%d]: %w", i, err)
		}
		if names[k.Name] {
			return nil, fmt.Errorf("%s: duplicate name", where)
		}
		names[k.Name] = true
		if !k.Role.valid() {
			return nil, fmt.Errorf("%s: role %q must be admin, writer or reader", where, k.Role)
		}
		if err := checkPatterns(k.Topics); err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		if id, err := hex.DecodeString(k.ID); err != nil || len(id) != keyIDBytes || k.ID != strings.ToLower(k.ID) {
			return nil, fmt.Errorf("%s: id %q must be %d lower-case hex digits", where, k.ID, 2*keyIDBytes)
		}
		if _, dup := a.byID[k.ID]; dup {
			return nil, fmt.Errorf("%s: duplicate id %s", where, k.ID)
		}
		salt, err := hex.DecodeString(k.Salt)
		if err != nil || len(salt) < saltBytes {
			return nil, fmt.Errorf("%s: salt must be at least %d bytes in hex", where, saltBytes)
		}
		hash, err := hex.DecodeString(k.Hash)
		if err != nil || len(hash) != sha256.Size {
			return nil, fmt.Errorf("%s: hash must be a SHA-256 in hex", where)
		}
		if k.RateLimit != nil && *k.RateLimit < 0 {
			return nil, fmt.Errorf("%s: rate_limit %d must not be negative", where, *k.RateLimit)
		}
		ak := &Key{name: k.Name, role: k.Role, salt: salt, hash: hash, rate: k.RateLimit}
		if len(k.Topics) > 0 {
			ak.topics = k.Topics
		}
		a.byID[k.ID] = ak
	}
	return a, nil
}

// checkKeyName accepts names that read well in logs and audit lines.
func checkKeyName(name string) error {
	if !schema.ValidToken(name, 64, false) {
		return fmt.Errorf("name %q must match ^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", name)
	}
	return nil
}

// checkPatterns accepts topic glob patterns in path.Match syntax.
func checkPatterns(ps []string) error {
	for _, p := range ps {
		if p == "" {
			return errors.New("empty topic pattern")
		}
		if _, err := path.Match(p, ""); err != nil {
			return fmt.Errorf("topic pattern %q: %w", p, err)
		}
	}
	return nil
}

// hashSecret is the stored form of a secret.
func hashSecret(salt []byte, secret string) []byte {
	h := sha256.New()
	h.Write(salt)
	h.Write([]byte(secret))
	return h.Sum(nil)
}

// dummyKey is checked when a secret names no key, so an unknown id costs
// the same hash as a known one.
var dummyKey = &Key{salt: make([]byte, saltBytes), hash: make([]byte, sha256.Size)}

// Lookup returns the key whose secret this is, or nil. The hashes are
// compared in constant time; the id (public) only picks which to compare.
func (a *Auth) Lookup(secret string) *Key {
	k := dummyKey
	id, ok := secretID(secret)
	if ok {
		if found, ok2 := a.byID[id]; ok2 {
			k = found
		} else {
			ok = false
		}
	}
	match := subtle.ConstantTimeCompare(hashSecret(k.salt, secret), k.hash) == 1
	if !ok || !match {
		return nil
	}
	return k
}

// secretID returns the key id a secret carries.
func secretID(secret string) (string, bool) {
	rest, ok := strings.CutPrefix(secret, secretPrefix)
	if !ok || len(rest) < 2*keyIDBytes+1 || rest[2*keyIDBytes] != '_' {
		return "", false
	}
	return rest[:2*keyIDBytes], true
}

// RateFor returns a key's requests per second: its own, else its role's,
// else def; 0 means no limit.
func (a *Auth) RateFor(k *Key, def int) int {
	if k.rate != nil {
		return *k.rate
	}
	if n, ok := a.roleRates[k.role]; ok {
		return n
	}
	return def
}

// Len is the number of keys.
func (a *Auth) Len() int { return len(a.byID) }

// Names lists the key names, sorted.
func (a *Auth) Names() []string {
	out := make([]string, 0, len(a.byID))
	for _, k := range a.byID {
		out = append(out, k.name)
	}
	sort.Strings(out)
	return out
}

// AddKey appends a new key to the auth file (created, mode 0600, when it
// does not exist) and returns its secret, which is stored nowhere. A name
// already in the file is refused, as is a file that does not parse.
func AddKey(file, name string, role Role, topics []string) (string, error) {
	if err := checkKeyName(name); err != nil {
		return "", err
	}
	if !role.valid() {
		return "", fmt.Errorf("role %q must be admin, writer or reader", role)
	}
	if err := checkPatterns(topics); err != nil {
		return "", err
	}
	raw, err := os.ReadFile(file)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("auth file: %w", err)
	}
	existing, err := parseAuth(raw)
	if err != nil {
		return "", fmt.Errorf("auth file %s: %w", file, err)
	}
	for _, k := range existing.byID {
		if k.name == name {
			return "", fmt.Errorf("auth file %s: a key named %q exists already", file, name)
		}
	}
	var id, secret, salt []byte
	for {
		id, secret, salt = randBytes(keyIDBytes), randBytes(secretBytes), randBytes(saltBytes)
		if _, taken := existing.byID[hex.EncodeToString(id)]; !taken {
			break
		}
	}
	sec := secretPrefix + hex.EncodeToString(id) + "_" + base64.RawURLEncoding.EncodeToString(secret)
	entry := APIKey{
		Name:      name,
		ID:        hex.EncodeToString(id),
		Role:      role,
		Topics:    topics,
		Salt:      hex.EncodeToString(salt),
		Hash:      hex.EncodeToString(hashSecret(salt, sec)),
		CreatedAt: time.Now().UTC().Format(time.RFC3339),
	}
	var block bytes.Buffer
	if len(raw) > 0 && raw[len(raw)-1] != '\n' {
		block.WriteByte('\n')
	}
	if len(raw) == 0 {
		block.WriteString("# Go-KVDB API keys, written by `router keygen`; the router re-reads this file on SIGHUP.\n")
	}
	block.WriteByte('\n')
	if err := toml.NewEncoder(&block).Encode(struct {
		Keys []APIKey `toml:"keys"`
	}{[]APIKey{entry}}); err != nil {
		return "", fmt.Errorf("encode key: %w", err)
	}
	// Check the file as it will read, before touching it.
	if _, err := parseAuth(append(bytes.Clone(raw), block.Bytes()...)); err != nil {
		return "", fmt.Errorf("auth file %s: the new key would not parse: %w", file, err)
	}
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return "", fmt.Errorf("auth file: %w", err)
	}
	if _, err := f.Write(block.Bytes()); err != nil {
		f.Close()
		return "", fmt.Errorf("auth file %s: %w", file, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return "", fmt.Errorf("auth file %s: %w", file, err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("auth file %s: %w", file, err)
	}
	return sec, nil
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b) // never fails (crypto/rand)
	return b
}
