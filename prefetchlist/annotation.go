package prefetchlist

// LayerAnnotation names the layer annotation in which `lazyconv convert
// --prioritize` records, in the list format, the files of that layer it
// left in their place because start-up reads only parts of them, with
// those parts ("#@ranges" after each path; the paths are the layer's own
// names, made absolute). containerd copies layer annotations whose names
// start with "containerd.io/snapshot/" into the labels of the layer's
// Prepare, so the snapshotter gets it the way it gets the eStargz TOC
// digest, and prefetches those ranges.
const LayerAnnotation = "containerd.io/snapshot/lazysnap.prefetch-ranges"

// MaxLabelSize is the most bytes containerd accepts in a label's name and
// value together (containerd's labels.Validate); a Prepare with a larger
// label fails, and with it the image's unpack. Writers of LayerAnnotation
// keep within it, and readers refuse a larger value as hostile.
const MaxLabelSize = 4096
