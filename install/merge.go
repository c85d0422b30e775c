package install

import "fmt"

// MergeContainerdConfig returns raw, a containerd config (version 2, 3 or 4),
// with lazysnap merged in exactly as Install writes it, and whether that
// changed anything. Only the options naming what goes into the config count
// (WithSocket, WithRootDir, WithPlatform). It touches no file: tests and
// configuration tools use it to produce the config Install would.
func MergeContainerdConfig(raw []byte, opts ...Option) ([]byte, bool, error) {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	cfg, err := parseContainerdConfig(raw)
	if err != nil {
		return nil, false, err
	}
	tree, changed := cfg.merged(o.proxySettings())
	if !changed {
		return raw, false, nil
	}
	data, err := encodeContainerdConfig(tree)
	if err != nil {
		return nil, false, fmt.Errorf("merging lazysnap into containerd config: %w", err)
	}
	return data, true, nil
}
