"""The numba.cuda kernels compile to PTX for real GPUs (cc 8.0 and 9.0), without a GPU.

`compile_all_ptx` needs numba-cuda and its NVVM (the [cu13] wheels); when they are missing
these tests skip and say why. The spill check has two levels: no local memory in the PTX
(`.local`, ld.local, st.local: what NVVM could not keep in registers), and, where a
`ptxas` is on PATH, its own report (`-v`: spill stores/loads after register allocation).

The clear-error tests run in this process, where no GPU is present and the simulator is off.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import edgelstm as el
from edgelstm.kernels import cuda as kc

KERNELS = ("input_proj", "lstm_step", "proj_step", "lstm_persistent")
CCS = [(8, 0), (9, 0)]


@pytest.fixture(scope="module")
def ptx_by_cc():
    if kc.cuda is None:
        pytest.skip(f"numba-cuda is not importable: {kc._IMPORT_ERROR!r}")
    try:
        import importlib.metadata as md
        md.version("numba-cuda")
    except md.PackageNotFoundError:   # numba's own deprecated numba.cuda needs a driver to compile
        pytest.skip("numba-cuda is not installed (the 'cuda' extra): numba's built-in numba.cuda "
                    "cannot compile PTX without a CUDA driver")
    out = {}
    for cc in CCS:
        try:
            out[cc] = kc.compile_all_ptx(cc)
        except Exception as e:      # NVVM missing: NvvmSupportError and friends
            if "nvvm" in f"{type(e).__name__} {e}".lower():
                pytest.skip(f"NVVM is not available for compile_ptx: {type(e).__name__}: {e}")
            raise
    return out


def _entries(ptx: str):
    return re.findall(r"^\.visible \.entry (\S+?)\(", ptx, flags=re.M)


@pytest.mark.parametrize("cc", CCS, ids=lambda cc: f"sm_{cc[0]}{cc[1]}")
def test_every_kernel_compiles_with_its_entry_point(ptx_by_cc, cc):
    ptx = ptx_by_cc[cc]
    assert sorted(ptx) == sorted(KERNELS)
    for name, text in ptx.items():
        assert f".target sm_{cc[0]}{cc[1]}" in text
        entries = _entries(text)
        assert len(entries) == 1, f"{name}: expected one entry point, got {entries}"
        assert name in entries[0], f"{name}: entry point {entries[0][:80]}... does not name it"
        assert "bar.sync" in text, f"{name}: expected a block barrier (syncthreads)"


@pytest.mark.parametrize("cc", CCS, ids=lambda cc: f"sm_{cc[0]}{cc[1]}")
@pytest.mark.parametrize("name", KERNELS)
def test_no_local_memory_in_ptx(ptx_by_cc, cc, name):
    lines = kc.ptx_local_memory_lines(ptx_by_cc[cc][name])
    assert lines == [], f"{name} sm_{cc[0]}{cc[1]} uses local memory: {lines[:5]}"


def _ptxas_report(ptx: str, cc, tmp_path):
    """ptxas -v's resource lines, or skip when no usable ptxas is present."""
    ptxas = shutil.which("ptxas")
    if ptxas is None:
        pytest.skip("ptxas is not on PATH: the register-allocation spill check needs it")
    src = tmp_path / "k.ptx"

    def run(text):
        src.write_text(text)
        return subprocess.run([ptxas, "-v", f"--gpu-name=sm_{cc[0]}{cc[1]}", "-o", "/dev/null",
                               str(src)], capture_output=True, text=True, timeout=120)

    r = run(ptx)
    if r.returncode != 0 and "version" in r.stderr.lower():
        # NVVM from a newer toolkit stamps a newer PTX ISA version than this ptxas knows;
        # the kernels use nothing newer than ISA 8.0, so an older stamp assembles the same code.
        r = run(re.sub(r"^\.version \d+\.\d+", ".version 8.0", ptx, flags=re.M))
    if r.returncode != 0:
        pytest.skip(f"ptxas could not assemble the PTX: {r.stderr.strip()[:300]}")
    return r.stderr


@pytest.mark.parametrize("cc", CCS, ids=lambda cc: f"sm_{cc[0]}{cc[1]}")
@pytest.mark.parametrize("name", KERNELS)
def test_ptxas_reports_no_spills(ptx_by_cc, cc, name, tmp_path):
    report = _ptxas_report(ptx_by_cc[cc][name], cc, tmp_path)
    m = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", report)
    assert m, report
    assert (int(m.group(1)), int(m.group(2))) == (0, 0), f"{name}: {report}"
    regs = int(re.search(r"Used (\d+) registers", report).group(1))
    assert regs <= 64, f"{name}: {regs} registers per thread limits occupancy"
    smem = int(re.search(r"(\d+) bytes smem", report).group(1))
    assert smem <= kc.PERSISTENT_SMEM_BYTES            # static shared memory limit per block


# ---- without a GPU: clear errors, and importing edgelstm never needs numba.cuda -----------
def _no_gpu_here():
    if kc.cuda is None:
        return
    from numba import config
    if config.ENABLE_CUDASIM or kc.cuda.is_available():
        pytest.skip("a GPU (or the simulator) is present: the no-GPU error cannot be raised here")


def test_lstm_cuda_without_gpu_says_what_is_missing():
    _no_gpu_here()
    w = el.LSTMWeights.random(el.LSTMSpec(3, 4))
    with pytest.raises(kc.CudaUnavailableError) as e:
        kc.lstm_cuda(np.zeros((2, 1, 3), np.float32), w)
    msg = str(e.value)
    if kc.cuda is None:
        assert "numba-cuda" in msg
    else:
        assert "numba.cuda.is_available() is False" in msg and "NUMBA_ENABLE_CUDASIM" in msg


def test_cuda_stream_without_gpu_says_what_is_missing():
    _no_gpu_here()
    with pytest.raises(kc.CudaUnavailableError, match="CUDA GPU|numba-cuda"):
        kc.CudaStream(el.LSTMWeights.random(el.LSTMSpec(3, 4)))


def test_public_lstm_device_cuda_without_gpu_raises_clearly():
    _no_gpu_here()
    with pytest.raises(kc.CudaUnavailableError, match="CUDA GPU|numba-cuda"):
        el.lstm(np.zeros((2, 1, 3), np.float32), el.LSTMWeights.random(el.LSTMSpec(3, 4)), device="cuda")


def test_missing_numba_cuda_is_named(monkeypatch):
    monkeypatch.setattr(kc, "cuda", None)
    monkeypatch.setattr(kc, "_IMPORT_ERROR", ImportError("No module named 'numba.cuda'"))
    with pytest.raises(kc.CudaUnavailableError, match=r"numba-cuda.*pip install"):
        kc.lstm_cuda(np.zeros((2, 1, 3), np.float32), el.LSTMWeights.random(el.LSTMSpec(3, 4)))


def test_importing_edgelstm_does_not_import_numba_cuda():
    code = "import sys, edgelstm; print('numba.cuda' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


def test_persistent_budget_rule():
    # 4H*P + P*H (proj) + B*P + 2*B*H elements, 4 bytes each, against 48 KiB per block
    spec = el.LSTMSpec(8, 48)
    assert kc.persistent_smem_bytes(spec, 1) == 4 * (4 * 48 * 48 + 48 + 2 * 48)
    assert kc.persistent_fits(spec, 1)                     # 37.4 KB
    assert not kc.persistent_fits(el.LSTMSpec(8, 128), 1)  # 262 KB: the step kernel
    assert kc.persistent_smem_bytes(el.LSTMSpec(8, 64, proj_size=16), 2) == \
        4 * (4 * 64 * 16 + 16 * 64 + 2 * 16 + 2 * 2 * 64)
