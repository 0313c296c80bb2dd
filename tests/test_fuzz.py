"""Fuzzing the file readers (issue 16): hypothesis-mutated ONNX protobufs, .keras zips with
mutated configs and h5 files, target TOMLs and grid files, each search in a child process
whose address space is capped (resource.setrlimit RLIMIT_AS: what its imports use + 768 MiB,
with EDGELSTM_MAX_BYTES at 64 MiB), through load_model / load_target / load_grid and the CLI.

A search fails if anything but the documented error escapes (ModelFileError, TargetError,
BenchError; the CLI: exit 0, or 2 with one line), if an allocation hits the cap
(MemoryError), or if a canary file outside the model is opened (inotify). The searches are
derandomized (the same examples every run) so CI is reproducible; tests/fuzz_child.py holds
the strategies. Keep the total under a minute: raise the counts locally with FUZZ_EXAMPLES."""
import os
import sys

import pytest

from hostile_files import run_capped

pytest.importorskip("hypothesis")
pytest.importorskip("onnx")
pytest.importorskip("h5py")
if not sys.platform.startswith("linux"):
    pytest.skip("the fuzz children use Linux's RLIMIT_AS and inotify", allow_module_level=True)

CAP = 768 * 2**20
EXAMPLES = {"onnx": 300, "keras": 150, "target": 200, "grid": 150}


@pytest.mark.parametrize("kind", list(EXAMPLES))
def test_fuzz(kind, tmp_path):
    n = int(os.environ.get("FUZZ_EXAMPLES", EXAMPLES[kind]))
    r = run_capped(f"import fuzz_child\nfuzz_child.setup({str(tmp_path)!r})",
                   f"fuzz_child.run({kind!r}, {n})", CAP,
                   env={"EDGELSTM_MAX_BYTES": str(64 * 2**20), "EDGELSTM_MAX_CONFIGS": "1000"}, timeout=600)
    assert r.returncode == 0, f"fuzz {kind} failed (exit {r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}"
    assert f"fuzz {kind}: {n} examples, no escape, canary untouched" in r.stderr
