"""Run a command whose children must not outlive the test (torchrun workers, servers)."""

from __future__ import annotations

import os
import signal
import subprocess


def run_group(cmd: list[str], *, timeout: float, **kw) -> subprocess.CompletedProcess:
    """``subprocess.run`` in a new process group; on timeout the WHOLE group is killed (no orphaned workers)."""
    with subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          **kw) as p:  # fmt: skip
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            out, err = p.communicate()
            raise AssertionError(f"timed out after {timeout} s: {' '.join(cmd)}\n{err[-3000:]}") from None
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)
