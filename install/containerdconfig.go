package install

import (
	"bytes"
	"fmt"
	"reflect"

	"github.com/containerd/errdefs"
	"github.com/pelletier/go-toml/v2"
)

// ProxyPluginName is the name containerd knows lazysnap by: the proxy
// plugin's key and the value of the CRI snapshotter setting.
const ProxyPluginName = "lazysnap"

// containerdConfig is a containerd config file decoded into a generic tree,
// so that settings lazysnap does not know about survive a merge untouched.
type containerdConfig struct {
	raw     []byte
	tree    map[string]any
	version int64
}

// parseContainerdConfig decodes a containerd config and checks its version.
// Version 1 (no "version" key) predates the plugin IDs the merge writes, so
// it is refused rather than guessed at.
func parseContainerdConfig(raw []byte) (*containerdConfig, error) {
	tree := map[string]any{}
	if err := toml.Unmarshal(raw, &tree); err != nil {
		return nil, fmt.Errorf("parsing containerd config: %w: %w", errdefs.ErrInvalidArgument, err)
	}
	version, _ := tree["version"].(int64)
	switch version {
	case 2, 3, 4:
	case 0:
		return nil, fmt.Errorf("containerd config has no version (version 1); migrate it with `containerd config migrate`: %w", errdefs.ErrFailedPrecondition)
	default:
		return nil, fmt.Errorf("containerd config version %d is not supported (2, 3 or 4 are): %w", version, errdefs.ErrFailedPrecondition)
	}
	return &containerdConfig{raw: raw, tree: tree, version: version}, nil
}

// proxySettings are the values lazysnap puts into containerd's config.
type proxySettings struct {
	socket   string // the proxy plugin's address
	rootDir  string // exported to containerd as the plugin's root
	platform string // the host's platform, for the transfer service's unpack entries
}

// setting is one value at a key path in the config tree.
type setting struct {
	path  []string
	value any
	// merge, when set, computes the value from what the config has at path
	// (cur, present) instead of replacing it with value: for lists that
	// lazysnap adds to but does not own.
	merge func(cur any, present bool) any
}

// valueIn returns the value the setting gives path in tree.
func (s setting) valueIn(tree map[string]any) any {
	if s.merge == nil {
		return s.value
	}
	cur, ok := getPath(tree, s.path)
	return s.merge(cur, ok)
}

// criImagesPath returns the table holding the CRI plugin's image settings.
// containerd 2.0 split the CRI plugin and moved them from the grpc CRI
// plugin's "containerd" table to the images plugin (config versions 3 and 4).
func criImagesPath(version int64) []string {
	if version == 2 {
		return []string{"plugins", "io.containerd.grpc.v1.cri", "containerd"}
	}
	return []string{"plugins", "io.containerd.cri.v1.images"}
}

// lazysnapSettings lists every key the installer owns in a config of the
// given version. Merge sets exactly these; unmerge reverts exactly these.
func lazysnapSettings(version int64, p proxySettings) []setting {
	cri := criImagesPath(version)
	return []setting{
		// CRI pulls into lazysnap instead of overlayfs...
		{path: append(cri[:len(cri):len(cri)], "snapshotter"), value: ProxyPluginName},
		// ...and passes the image ref and layer digests lazysnap needs to
		// mount layers from the registry (false is the default in 2.x,
		// true in 1.7; it is set either way so the intent is explicit).
		{path: append(cri[:len(cri):len(cri)], "disable_snapshot_annotations"), value: false},
		{path: []string{"proxy_plugins", ProxyPluginName}, value: map[string]any{
			"type":    "snapshot",
			"address": p.socket,
			"exports": map[string]any{
				"root": p.rootDir,
				// containerd 2.x's unpacker (ctr, transfer service) passes
				// the remote-snapshot labels only to snapshotters exporting it.
				"enable_remote_snapshot_annotations": "true",
			},
		}},
		{path: transferUnpackPath(), merge: p.mergeUnpackConfig},
	}
}

// merged returns a copy of the tree with lazysnap's settings applied, and
// whether that differs from the config as it is.
func (c *containerdConfig) merged(p proxySettings) (map[string]any, bool) {
	tree := deepCopy(c.tree)
	for _, s := range lazysnapSettings(c.version, p) {
		setPath(tree, s.path, deepCopyValue(s.valueIn(tree)))
	}
	return tree, !reflect.DeepEqual(tree, c.tree)
}

// unmerged returns a copy of the tree with lazysnap's settings reverted: set
// back to their value in original (the backup) or removed if original had
// none, pruning tables the merge created. original may be nil.
func (c *containerdConfig) unmerged(p proxySettings, original map[string]any) (map[string]any, bool) {
	tree := deepCopy(c.tree)
	for _, s := range lazysnapSettings(c.version, p) {
		if v, ok := getPath(original, s.path); ok {
			setPath(tree, s.path, deepCopyValue(v))
			continue
		}
		deletePath(tree, s.path, original)
	}
	return tree, !reflect.DeepEqual(tree, c.tree)
}

// hasLazysnap reports whether the config references lazysnap at all.
func (c *containerdConfig) hasLazysnap() bool {
	_, ok := getPath(c.tree, []string{"proxy_plugins", ProxyPluginName})
	v, _ := getPath(c.tree, append(criImagesPath(c.version), "snapshotter"))
	return ok || v == ProxyPluginName
}

// encodeContainerdConfig encodes a tree the way `containerd config default`
// does (indented tables), so a merged file stays readable.
func encodeContainerdConfig(tree map[string]any) ([]byte, error) {
	var buf bytes.Buffer
	enc := toml.NewEncoder(&buf).SetIndentTables(true)
	if err := enc.Encode(tree); err != nil {
		return nil, fmt.Errorf("encoding containerd config: %w", err)
	}
	return buf.Bytes(), nil
}

func getPath(tree map[string]any, path []string) (any, bool) {
	var cur any = tree
	for _, k := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[k]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// setPath sets path to v, creating intermediate tables and replacing a
// non-table value in the way (containerd could not have used it anyway).
func setPath(tree map[string]any, path []string, v any) {
	m := tree
	for _, k := range path[:len(path)-1] {
		next, ok := m[k].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[k] = next
		}
		m = next
	}
	m[path[len(path)-1]] = v
}

// deletePath removes path and then every table on the way to it that became
// empty and did not exist in original, so uninstall leaves no empty
// "[proxy_plugins]" behind but keeps an empty table the user wrote.
func deletePath(tree map[string]any, path []string, original map[string]any) {
	parents := []map[string]any{tree}
	for _, k := range path[:len(path)-1] {
		next, ok := parents[len(parents)-1][k].(map[string]any)
		if !ok {
			return
		}
		parents = append(parents, next)
	}
	delete(parents[len(parents)-1], path[len(path)-1])
	for i := len(parents) - 1; i > 0; i-- {
		if len(parents[i]) > 0 {
			return
		}
		if _, existed := getPath(original, path[:i]); existed {
			return
		}
		delete(parents[i-1], path[i-1])
	}
}

func deepCopy(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = deepCopyValue(v)
	}
	return out
}

func deepCopyValue(v any) any {
	switch v := v.(type) {
	case map[string]any:
		return deepCopy(v)
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = deepCopyValue(e)
		}
		return out
	default:
		return v
	}
}
