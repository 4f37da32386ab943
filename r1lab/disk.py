"""Writing files safely: `atomic_write` (a whole file or the old one, never half of one), and write errors said
plainly: a full disk (ENOSPC), a read-only filesystem or no permission while writing a checkpoint, a model or a
log raises one OSError naming what was being written, after removing the partial temporary files, instead of a
raw torch/safetensors traceback and a half-written directory."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
from pathlib import Path

_PLAIN = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
          errno.EROFS: "read-only file system", errno.EACCES: "permission denied"}


def _reason(err: BaseException, where: Path) -> str | None:
    if isinstance(err, OSError) and err.errno in _PLAIN:
        return _PLAIN[err.errno]
    # torch.save reports a failed write as a RuntimeError ("PytorchStreamWriter failed writing file"): a full disk
    # is the usual cause, told by the free space left
    if isinstance(err, RuntimeError) and "writ" in str(err).lower():
        try:
            free = shutil.disk_usage(next(p for p in (where, *where.parents) if p.exists())).free
        except (OSError, StopIteration):
            return None
        return "no space left on device" if free < (64 << 20) else None
    return None


@contextlib.contextmanager
def writing(what: str, where: Path, cleanup: Path | None = None):
    """Runs a write; on failure removes `cleanup` (a temporary file or directory) and, for a disk or
    permission error, raises OSError(errno, '<what> <where>: <reason>; ...')."""
    try:
        yield
    except (OSError, RuntimeError) as err:
        if cleanup is not None:
            if Path(cleanup).is_dir():
                shutil.rmtree(cleanup, ignore_errors=True)
            else:
                Path(cleanup).unlink(missing_ok=True)
        reason = _reason(err, Path(where))
        if reason is None:
            raise
        code = err.errno if isinstance(err, OSError) and err.errno else errno.ENOSPC
        plain = OSError(f"writing {what} {where}: {reason}; the partial files were removed, the previous checkpoint "
                        "is intact; free space (or fix permissions) and run the same command to resume")
        plain.errno = code  # set apart: OSError(errno, text) would print "[Errno 28]" before the text
        raise plain from err


def atomic_write(path: Path, text: str, what: str = "file") -> None:
    """`text` to `path` through a temporary file beside it, renamed over it: a reader (or a resume after a kill)
    finds the old file or the new one, never half of one. `what` names the file in a disk error."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with writing(what, path, cleanup=tmp):
        tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def sha256_file(path: Path) -> str:
    """The sha256 hex digest of a file's bytes, read in 1 MiB blocks: a checkpoint's weights need not fit in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
