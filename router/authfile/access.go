package authfile

import "path"

// Access is what a request needs of its key.
type Access uint8

const (
	AccessAuth  Access = iota // any valid key (a route that does not exist)
	AccessRead                // read a topic's data
	AccessWrite               // change a topic's data
	AccessAdmin               // the cluster and admin routes
)

func (a Access) String() string {
	return [...]string{"authenticated", "read", "write", "admin"}[a]
}

// TopicAllowed reports whether k may act on topic. A nil key (the router
// runs open) and a key without patterns may act on every topic.
func (k *Key) TopicAllowed(topic string) bool {
	if k == nil || k.topics == nil {
		return true
	}
	for _, p := range k.topics {
		if ok, _ := path.Match(p, topic); ok {
			return true
		}
	}
	return false
}

// Label names the key in logs and audit lines ("" for none).
func (k *Key) Label() string {
	if k == nil {
		return ""
	}
	return k.name
}

// Role is the key's role.
func (k *Key) Role() Role { return k.role }

// Scoped reports whether the key is limited to some topics.
func (k *Key) Scoped() bool { return k != nil && k.topics != nil }
