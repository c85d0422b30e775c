package testenv

import "testing"

// pauseScript is PID 1 of a pod sandbox: it sleeps until SIGTERM or SIGINT.
// A shell ignores signals without a trap as PID 1, hence the trap; `wait`
// returns as soon as a trapped signal arrives.
const pauseScript = "trap 'exit 0' TERM INT; while true; do sleep 3600 & wait $!; done"

// BuildPauseImage pushes a tiny busybox-based pause image to reg for CRI's
// sandbox (the real one cannot be pulled without the internet) and returns
// its reference.
func BuildPauseImage(t testing.TB, reg *Registry) string {
	t.Helper()
	img, err := buildImage(reg.Ref("pause:test"), []string{"/bin/sh", "-c", pauseScript}, []LayerSpec{BusyboxLayer()})
	if err != nil {
		t.Fatalf("building pause image: %v", err)
	}
	return img.Ref
}
