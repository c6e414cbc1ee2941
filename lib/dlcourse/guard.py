"""Limits for a kernel that runs a submission under the autograder.

The graders start every kernel with one line (see
:func:`dlcourse.grade.kernel_arguments`)::

    from dlcourse.guard import install; install(root=..., memory_gb=6)

* a memory limit (``RLIMIT_DATA``): a runaway allocation raises in the cell
  instead of taking the machine down;
* no warnings: nbgrader scores any stderr output of a test cell as 0, and a
  warning from PyTorch or NumPy during a correct answer must not cost points;
* a fence (a Python audit hook) around the nbgrader course folder ``root``:
  the notebook may read and write its own folder (and anything Python
  imports), but not read the solutions, the gradebook or other students'
  files, nor write, delete or rename anything else in the course, nor start
  programs.

The fence stops accidents and casual attempts; it is not a sandbox (code in
C, e.g. through ``ctypes``, is not seen by audit hooks). Grade untrusted
submissions as a separate user in a container: see the book's page for
instructors.
"""
from __future__ import annotations

import os
import resource
import sys
import warnings
from pathlib import Path

_WRITE_FLAGS = (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC
                | os.O_APPEND)
_PROGRAMS = {"subprocess.Popen", "os.system", "os.exec", "os.posix_spawn",
             "os.spawn", "pty.spawn"}
_READS = {"os.listdir", "os.scandir", "glob.glob"}
_WRITES = {"os.remove", "os.rmdir", "os.mkdir", "os.chmod", "os.chown",
           "os.truncate", "os.utime", "shutil.rmtree", "shutil.move",
           "os.rename", "os.link", "os.symlink", "shutil.copyfile",
           "shutil.copytree"}


def install(root: str | None = None, memory_gb: float | None = 6,
            quiet: bool = True) -> None:
    """Apply the limits to this (kernel) process; see the module text."""
    if memory_gb:
        limit = int(memory_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    if quiet:
        warnings.simplefilter("ignore")
    if root:
        sys.addaudithook(_fence(Path(root).resolve(), Path.cwd().resolve()))


def _fence(root: Path, here: Path):
    importable = tuple(
        str(p) for p in (Path(e).resolve() for e in sys.path if e)
        if p.is_relative_to(root) and not here.is_relative_to(p))
    root_s, here_s = str(root), str(here)

    def inside(path: str, folder: str) -> bool:
        return path == folder or path.startswith(folder + os.sep)

    def check(path, write: bool, what: str) -> None:
        if isinstance(path, int) or path is None:
            return
        try:
            full = os.path.realpath(os.fsdecode(path))
        except (TypeError, ValueError):
            return
        if not inside(full, root_s) or inside(full, here_s):
            return
        if not write and any(inside(full, p) for p in importable):
            return
        raise PermissionError(
            f"not allowed while grading: {what} {full} (a notebook may only "
            f"use its own folder, {here_s})")

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = (tuple(args) + (None, None))[:3]
            write = (any(m in mode for m in "wax+") if isinstance(mode, str)
                     else bool((flags or 0) & _WRITE_FLAGS))
            check(path, write, "writing" if write else "reading")
        elif event in _READS:
            check(args[0] if args else None, False, "listing")
        elif event in _WRITES:
            for path in args[:2]:
                if isinstance(path, (str, bytes, os.PathLike)):
                    check(path, True, event)
        elif event in _PROGRAMS:
            raise PermissionError(
                f"not allowed while grading: starting a program ({event})")

    return hook
