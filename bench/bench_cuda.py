"""numba.cuda kernels on a real GPU: the persistent kernel against the per-step kernels.

    python -m pytest bench/bench_cuda.py --benchmark-only

Skips (with the reason) when numba-cuda or a CUDA GPU is missing, as on this project's
machines. Inputs live on the device and are built outside the timed region; each timed
call ends with cuda.synchronize(), so the time is the GPU's, not the launch queue's.
extra_info records the spec, sizes, FLOPs per call (edgelstm.count), GFLOP/s reached, and
the cost model's prediction for both implementations on the matching catalog target.
"""
from __future__ import annotations

import numpy as np
import pytest

import edgelstm as el
from edgelstm.kernels import cuda as kc

if kc.cuda is None:
    pytest.skip(f"numba-cuda is not importable: {kc._IMPORT_ERROR!r}", allow_module_level=True)
from numba import config  # noqa: E402

if config.ENABLE_CUDASIM or not kc.cuda.is_available():
    pytest.skip("no CUDA GPU/driver (numba.cuda.is_available() is False, or the simulator is on): "
                "GPU benchmarks need a GPU", allow_module_level=True)
cuda = kc.cuda

T = 100
CASES = [  # (input_size, hidden_size, batch)
    (32, 32, 1), (48, 48, 1), (128, 128, 1), (256, 256, 1), (128, 128, 16),
]


def _target_name():
    name = cuda.get_current_device().name
    name = name.decode() if isinstance(name, bytes) else str(name)
    for key in ("h100", "a100"):
        if key in name.lower():
            return key
    return None


def _predicted(spec, batch, implementation):
    target = _target_name()
    if target is None:
        return None
    return el.predict(spec, target, batch=batch, seq_len=T, dtype="float32",
                      implementation=implementation).latency_s


@pytest.mark.parametrize("E,H,B", CASES, ids=[f"E{e}-H{h}-B{b}" for e, h, b in CASES])
@pytest.mark.parametrize("impl", ["persistent", "step"])
def test_lstm_cuda_sequence(benchmark, E, H, B, impl):
    spec = el.LSTMSpec(E, H)
    if impl == "persistent" and not kc.persistent_fits(spec, B):
        pytest.skip(f"{spec} at batch {B} needs {kc.persistent_smem_bytes(spec, B)} B of shared "
                    f"memory > PERSISTENT_SMEM_BYTES = {kc.PERSISTENT_SMEM_BYTES}")
    w = el.LSTMWeights.random(spec, seed=0)
    x = cuda.to_device(np.random.default_rng(0).standard_normal((T, B, E)).astype(np.float32))

    def run():
        out = kc.lstm_cuda(x, w, persistent=(impl == "persistent"))
        cuda.synchronize()
        return out

    run()                                                   # compile and pack outside timing
    benchmark(run)
    flops = el.count(spec, batch=B, seq_len=T, dtype="float32").flops_per_sequence
    benchmark.extra_info.update(
        spec=repr(spec), batch=B, seq_len=T, dtype="float32", implementation=impl,
        flops=flops, GFLOP_per_s=flops / benchmark.stats.stats.median / 1e9,
        implementation=kc.model_implementation(spec, B) if impl == "persistent" else "fused",
        predicted_s={i: _predicted(spec, B, i) for i in ("fused", "persistent-block", "persistent-grid")})


@pytest.mark.parametrize("E,H", [(32, 32), (128, 128)], ids=["E32-H32", "E128-H128"])
def test_cuda_stream_step(benchmark, E, H):
    spec = el.LSTMSpec(E, H)
    s = kc.CudaStream(el.LSTMWeights.random(spec, seed=0), batch=1)
    x_t = cuda.to_device(np.ones((1, E), np.float32))

    def step():
        h = s.step(x_t)
        cuda.synchronize()
        return h

    step()
    benchmark(step)
    flops = el.count(spec, batch=1, seq_len=1, dtype="float32").flops_per_step
    benchmark.extra_info.update(spec=repr(spec), batch=1, seq_len=1, flops=flops,
                                GFLOP_per_s=flops / benchmark.stats.stats.median / 1e9)
