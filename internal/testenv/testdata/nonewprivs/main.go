// Command nonewprivs stands in for the e2e-test-images/nonewprivs program
// critest runs: installed setuid root, it prints the effective uid it got,
// which tells whether no_new_privs stopped the setuid bit.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Printf("Effective uid: %d\n", os.Geteuid())
}
