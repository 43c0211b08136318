"""The hostile suite's contract, written once: a damaged input ends in rc 0 with correct behaviour, or in exactly one
``selfsup: error:`` line naming the problem, with no traceback, and no file of the user's touched."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path
from typing import Dict, Iterable, Tuple

from tests.conftest import run_cli


def tree(root: Path) -> Dict[str, Tuple[str, int]]:
    """Every entry under ``root`` with the hash of its contents (files) or ``dir`` / ``link`` and its mode: compare two
    of these to show that nothing was added, removed or changed."""
    root = Path(root)
    out: Dict[str, Tuple[str, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            st = p.lstat()
            if p.is_symlink():
                out[rel] = ("link:" + os.readlink(p), st.st_mode)
            elif p.is_dir():
                out[rel] = ("dir", st.st_mode)
            elif p.is_file():
                out[rel] = (hashlib.sha256(p.read_bytes()).hexdigest(), st.st_mode)
            else:
                out[rel] = ("special", st.st_mode)
    return out


def assert_one_line_error(res: subprocess.CompletedProcess, *words: str) -> str:
    """``res`` exited 2 with one ``selfsup: error:`` line (containing each of ``words``) and no traceback; returns the
    line."""
    err = res.stderr
    assert "Traceback" not in err, err[-3000:]
    assert res.returncode == 2, (res.returncode, res.stdout[-2000:], err[-2000:])
    lines = [ln for ln in err.splitlines() if ln.startswith("selfsup: error:")]
    assert len(lines) == 1, err[-2000:]
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


def assert_clean(res: subprocess.CompletedProcess) -> None:
    """``res`` exited 0 without a traceback."""
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    assert res.returncode == 0, (res.stdout[-2000:], res.stderr[-2000:])


def refused_untouched(roots: Iterable[Path], *args: str, words: Iterable[str] = (), timeout: int = 300) -> str:
    """Run ``selfsup ARGS``; it must be refused in one line (containing ``words``) and leave every folder of ``roots``
    exactly as it was. Returns the error line."""
    roots = [Path(r) for r in roots]
    before = [tree(r) for r in roots]
    res = run_cli(*args, timeout=timeout)
    line = assert_one_line_error(res, *words)
    for r, b in zip(roots, before):
        assert tree(r) == b, f"{r} was changed by selfsup {' '.join(args)}"
    return line
