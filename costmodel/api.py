"""The public entry points: `load_target` and `predict`, which choose between the generic
roofline (predict.py, for any target) and the model of edgelstm's CPU kernel on this
machine (host/, for `host`)."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

from .host.model import predict_host
from .host.profile import HostTarget, load_host_file
from .predict import Prediction, predict as predict_roofline
from .target import Target, host_target_path, load_target as load_generic, read_document

__all__ = ["load_target", "predict", "Prediction", "Target", "HostTarget"]


def load_target(name_or_path, generic: bool = False) -> Target:
    """A catalog name (`cortex-m7`), `host`, or the path of a TOML file.

    `host` is this machine, from `edgelstm calibrate` (run here in quick mode, with a note on
    stderr, when there is no file yet): a HostTarget, whose predictions follow the CPU
    kernel (costmodel/host), or with generic=True a plain Target (peak, bandwidth per level,
    overheads) that predict() runs the generic roofline on, as for any catalog target. The
    path of a host file (one with a [host] table) loads as `host` does."""
    if isinstance(name_or_path, Target):
        if generic and isinstance(name_or_path, HostTarget):
            return name_or_path.generic()
        return name_or_path
    s = str(name_or_path)
    if s != "host":
        if not generic and (s.endswith(".toml") or os.sep in s) and "host" in read_document(Path(s)):
            return load_host_file(s)      # a host file given by its path: the same as "host"
        return load_generic(name_or_path)
    path = host_target_path()
    if not path.exists():
        from edgelstm._files import check_writable
        from .host.calibrate import calibrate_apart
        from .target import HOST_ENV, TargetError
        check_writable(path, f"host target file (${HOST_ENV} or the default)", error=TargetError)
        print(f"edgelstm: no host calibration at {path}; calibrating this machine now "
              f"(quick mode, about 15 s; `edgelstm calibrate` for the full run)", file=sys.stderr)
        calibrate_apart(quick=True, out=path, progress=sys.stderr.isatty())     # (a child process)
    return load_generic(path) if generic else load_host_file(path)


def predict(spec, target, batch: int = 1, seq_len: int = 1, dtype: str = "float32", *,
            hoisted: bool = True, threads: Optional[int] = None, implementation: str = "fused") -> Prediction:
    """Latency, bound, energy and memory fit of `spec` on `target` (a Target, a catalog name,
    "host", or a TOML path). A HostTarget (`load_target("host")`) gets the model of the CPU
    kernel (costmodel/host/model.py); every other target the generic roofline
    (costmodel/predict.py, whose docstring has the arguments)."""
    target = load_target(target)
    run = predict_host if isinstance(target, HostTarget) else predict_roofline
    return run(spec, target, batch=batch, seq_len=seq_len, dtype=dtype, hoisted=hoisted, threads=threads,
               implementation=implementation)
