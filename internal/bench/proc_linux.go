package bench

import (
	"os/exec"
	"syscall"
)

// dieWithParent makes a server child end with the bench, even when the
// bench is killed (or its output pipe closes) before it can stop it.
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
