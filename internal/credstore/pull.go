package credstore

import (
	"fmt"
	"strings"

	"github.com/containerd/errdefs"
)

// Step is a stage of one pull's credentials.
type Step string

// The steps of a pull, in the order criproxy sends them.
const (
	// StepPending makes the credentials usable for the pull's repository
	// while the pull runs, if the repository has no working ones.
	StepPending Step = "pending"
	// StepSucceeded makes them the repository's working credentials.
	StepSucceeded Step = "succeeded"
	// StepFailed discards them.
	StepFailed Step = "failed"
)

// pullSep joins a repository and a pull's step. A '#' never occurs in a
// repository name, so a plain repository is never taken for a step.
const pullSep = "#"

// PullRepository returns the repository argument of SetCredentials that
// carries step of pull (an identifier unique to one PullImage call) for
// repository. The steps travel inside the repository because the only way
// credentials reach fused, the process that fetches layers, is
// SetCredentials(host, repository, cfg) over fused's socket.
func PullRepository(repository, pull string, step Step) string {
	return repository + pullSep + string(step) + "=" + pull
}

// splitPull undoes PullRepository. A plain repository comes back with an
// empty step and pull.
func splitPull(repository string) (repo, pull string, step Step, err error) {
	repo, rest, ok := strings.Cut(repository, pullSep)
	if !ok {
		return repository, "", "", nil
	}
	s, pull, _ := strings.Cut(rest, "=")
	switch Step(s) {
	case StepPending, StepSucceeded, StepFailed:
		if pull != "" {
			return repo, pull, Step(s), nil
		}
	}
	return "", "", "", fmt.Errorf("repository %q: unknown pull step: %w", repo, errdefs.ErrInvalidArgument)
}
