//go:build !cgo || !libdeflate

package inflate

// Available says whether this build decompresses with libdeflate.
const Available = false

// Gunzipper is a stand-in without libdeflate: Gunzip always fails.
type Gunzipper struct{}

// Gunzip returns ErrUnavailable: this build has no libdeflate.
func (g *Gunzipper) Gunzip(dst, src []byte) (int, error) { return 0, ErrUnavailable }

// GunzipFirst returns ErrUnavailable: this build has no libdeflate.
func (g *Gunzipper) GunzipFirst(dst, src []byte) (out, in int, err error) {
	return 0, 0, ErrUnavailable
}
