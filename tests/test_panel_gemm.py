"""The panel GEMMs (kernels/gemm.py) against numpy's float64 matmul, at every tile shape
(4, 3, 2 and 1 rows), panels that reach past G (the scratch path), row blocks that split the
rows unevenly, and both dtypes; and the whole kernel compiled for an AVX2 target (32-byte
vectors, 2-row tiles), in a child process, against the float64 reference."""
import os
import subprocess
import sys

import numpy as np
import pytest

from edgelstm.kernels.gemm import (_gemm_panel, _gemm_panel_acc, _gemm_panel_parallel, pack_panels,
                                   pad_panels, panel_width)

TOL = {"float32": dict(rtol=2e-5, atol=2e-5), "float64": dict(rtol=1e-12, atol=1e-12)}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("N,K,G,row_block", [(1, 1, 4, 16), (3, 7, 20, 16), (4, 40, 256, 16), (5, 33, 100, 4),
                                             (9, 64, 260, 8), (17, 5, 8, 16), (100, 40, 200, 32),
                                             (2, 128, 1024, 16), (7, 12, 70, 16), (11, 20, 130, 8)])
def test_gemm_panel_matches_numpy(dtype, N, K, G, row_block):
    rng = np.random.default_rng(N * 1000 + K)
    X = rng.standard_normal((N, K)).astype(dtype)
    W = rng.standard_normal((G, K)).astype(dtype)
    b = rng.standard_normal(G).astype(dtype)
    want = X.astype(np.float64) @ W.T.astype(np.float64) + b
    wp, bp = pack_panels(W), pad_panels(b)
    assert wp.shape[0] == -(-G // panel_width(W.itemsize)) * panel_width(W.itemsize) * K
    out = np.full((N, G), np.nan, dtype)
    _gemm_panel(X, wp, bp, out, row_block)
    np.testing.assert_allclose(out, want, **TOL[dtype])
    par = np.full((N, G), np.nan, dtype)
    _gemm_panel_parallel(X, wp, bp, par, max(4, row_block // 4))
    np.testing.assert_array_equal(par, out)         # the same tiles, the same sums


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("n,K,G", [(1, 64, 256), (2, 9, 36), (3, 16, 64), (5, 24, 100), (7, 10, 90), (8, 32, 128)])
def test_gemm_panel_acc_adds_to_the_first_rows_only(dtype, n, K, G):
    rng = np.random.default_rng(n + K)
    X = rng.standard_normal((8, K)).astype(dtype)
    W = rng.standard_normal((G, K)).astype(dtype)
    wp = pack_panels(W)
    z0 = rng.standard_normal((8, wp.shape[0] // K)).astype(dtype)
    z = z0.copy()
    _gemm_panel_acc(X, n, wp, z)
    want = z0[:n, :G] + X[:n].astype(np.float64) @ W.T.astype(np.float64)
    np.testing.assert_allclose(z[:n, :G], want, **TOL[dtype])
    np.testing.assert_array_equal(z[n:], z0[n:])     # rows past n untouched


AVX2_CHILD = r"""
import numpy as np, edgelstm as el
from edgelstm.kernels import simd
from edgelstm.kernels.reference import lstm_reference
assert simd.VECTOR_BYTES == 32 and simd.REGISTERS == 16, (simd.VECTOR_BYTES, simd.REGISTERS)
rng = np.random.default_rng(0)
for spec, B in ((el.LSTMSpec(7, 13, num_layers=2, bidirectional=True), 5), (el.LSTMSpec(9, 20, proj_size=6), 3)):
    w = el.LSTMWeights.random(spec, seed=1, dtype="float64")
    x = rng.standard_normal((6, B, spec.input_size))
    y, _ = el.lstm(x, w)
    np.testing.assert_allclose(y, lstm_reference(x, w)[0], rtol=1e-10, atol=1e-12)
print("ok")
"""


@pytest.mark.slow
def test_kernel_compiled_for_avx2_matches_reference(tmp_path):
    """Numba targeting Haswell (AVX2, no AVX-512): the vectors are 32 bytes and the tiles
    2 rows; the kernel still gives the reference's numbers (this machine runs AVX2 code)."""
    import llvmlite.binding as llvm
    if not llvm.get_host_cpu_features().get("avx2"):
        pytest.skip("this CPU cannot run AVX2 code")
    env = dict(os.environ, NUMBA_CPU_NAME="haswell", NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    env.pop("NUMBA_CPU_FEATURES", None)
    r = subprocess.run([sys.executable, "-c", AVX2_CHILD], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]
