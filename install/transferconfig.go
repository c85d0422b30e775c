package install

// defaultSnapshotter and defaultDiffer are containerd's on Linux
// (defaults.DefaultSnapshotter, defaults.DefaultDiffer).
const (
	defaultSnapshotter = "overlayfs"
	defaultDiffer      = "walking"
)

// transferUnpackPath is the transfer service's list of unpack platforms. The
// plugin ID is the same in config versions 2, 3 and 4: containerd's config
// migrations rename only version 1 plugins and move server and CRI settings,
// never the transfer plugin's.
func transferUnpackPath() []string {
	return []string{"plugins", "io.containerd.transfer.v1.local", "unpack_config"}
}

// unpackEntry is one [[...unpack_config]] table as containerd decodes it.
func unpackEntry(platform, snapshotter, differ string) map[string]any {
	return map[string]any{"platform": platform, "snapshotter": snapshotter, "differ": differ}
}

// mergeUnpackConfig adds lazysnap to the transfer service's unpack platforms,
// so that `ctr image pull --snapshotter lazysnap` (the transfer service)
// unpacks into lazysnap, with the remote-snapshot labels, instead of
// downloading everything and failing to find an unpack platform for it.
//
// containerd uses its built-in list (overlayfs for the host platform) only
// while unpack_config is absent; a list replaces it. So when the config has
// none, the default entry is written too, or a plain `ctr image pull` would
// stop unpacking. An existing list is the operator's: lazysnap's entry is
// appended, and nothing is changed when one naming lazysnap is already there.
func (p proxySettings) mergeUnpackConfig(cur any, present bool) any {
	ours := unpackEntry(p.platform, ProxyPluginName, defaultDiffer)
	if !present {
		return []any{unpackEntry(p.platform, defaultSnapshotter, defaultDiffer), ours}
	}
	list, ok := cur.([]any)
	if !ok {
		// Not a list of tables: containerd would refuse it anyway.
		return []any{unpackEntry(p.platform, defaultSnapshotter, defaultDiffer), ours}
	}
	for _, e := range list {
		if m, ok := e.(map[string]any); ok && m["snapshotter"] == ProxyPluginName {
			return cur
		}
	}
	return append(deepCopyValue(list).([]any), ours)
}
