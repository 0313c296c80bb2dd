"""The numba.cuda kernels on Numba's CUDA simulator, against the float64 reference.

NUMBA_ENABLE_CUDASIM=1 must be set before Numba is imported, and this pytest process has
already imported Numba, so every case runs in one subprocess (`_SIM_SCRIPT`) that prints
a JSON object {case: max |kernel - reference|} (and a few facts about array kinds); the
tests assert on it. Tiny shapes only: the simulator runs every GPU thread as a Python thread.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("numba.cuda", reason="numba-cuda is not installed")

_SIM_SCRIPT = r'''
import json, sys
import numpy as np
from numba import config, cuda
assert config.ENABLE_CUDASIM, "the simulator is not enabled"
import edgelstm as el
from edgelstm.kernels import cuda as kc
from edgelstm.kernels.reference import lstm_reference

out = {}
rng = np.random.default_rng(0)


def err(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def compare(name, spec, T=3, B=2, lengths=None, states=False, batch_first=False,
            dtype="float32", persistent=None, seed=0):
    w = el.LSTMWeights.random(spec, seed=seed, dtype=dtype)
    x = rng.standard_normal((T, B, spec.input_size)).astype(dtype)
    L, D = spec.num_layers, spec.num_directions
    h0 = c0 = None
    if states:
        h0 = (0.5 * rng.standard_normal((L * D, B, spec.out_size))).astype(dtype)
        c0 = (0.5 * rng.standard_normal((L * D, B, spec.hidden_size))).astype(dtype)
    yr, (hr, cr) = lstm_reference(x, w, h0, c0, lengths)
    xin = np.ascontiguousarray(x.transpose(1, 0, 2)) if batch_first else x
    y, (h, c) = kc.lstm_cuda(xin, w, h0, c0, lengths=lengths, batch_first=batch_first,
                             persistent=persistent)
    assert isinstance(y, np.ndarray) and y.dtype == np.dtype(dtype), (type(y), y.dtype)
    if batch_first:
        y = y.transpose(1, 0, 2)
    out[name] = max(err(y, yr), err(h, hr), err(c, cr))


S = el.LSTMSpec
for pers, tag in ((False, "step"), (True, "persistent")):
    compare(f"one_layer/{tag}", S(3, 5), persistent=pers)
    compare(f"two_layers_bidir/{tag}", S(3, 4, num_layers=2, bidirectional=True), persistent=pers)
    compare(f"proj/{tag}", S(3, 6, proj_size=3), states=True, persistent=pers)
    compare(f"proj_bidir_two_layers/{tag}", S(2, 5, num_layers=2, bidirectional=True, proj_size=2),
            T=2, persistent=pers)
    compare(f"peephole_keras_bias/{tag}", S(3, 4, peephole=True, bias="keras"), states=True,
            persistent=pers)
    compare(f"peephole_no_bias/{tag}", S(3, 4, peephole=True, bias="none"), persistent=pers)
    compare(f"lengths_bidir/{tag}", S(2, 4, bidirectional=True), T=4, lengths=[4, 2],
            states=True, persistent=pers)
    compare(f"lengths_all_short/{tag}", S(2, 3, bidirectional=True), T=4, lengths=[2, 1],
            persistent=pers)
    compare(f"batch_first/{tag}", S(3, 4, bidirectional=True), batch_first=True,
            lengths=[3, 1], persistent=pers)
compare("float64/step", S(3, 4, bidirectional=True, proj_size=2), dtype="float64", persistent=False)
compare("float64/persistent", S(3, 4, bidirectional=True, proj_size=2), dtype="float64",
        persistent=True)
compare("hidden_wider_than_block/step", S(2, 40), T=2, B=1, persistent=False)
compare("input_wider_than_gemm_tile/auto", S(20, 4), T=2, B=2)

# device arrays in -> device arrays out
spec = S(3, 4, num_layers=2, bidirectional=True)
w = el.LSTMWeights.random(spec, seed=3)
x = rng.standard_normal((3, 2, 3)).astype(np.float32)
h0 = rng.standard_normal((4, 2, 4)).astype(np.float32)
c0 = rng.standard_normal((4, 2, 4)).astype(np.float32)
yr, (hr, cr) = lstm_reference(x, w, h0, c0)
for pers, tag in ((False, "step"), (True, "persistent")):
    y, (h, c) = kc.lstm_cuda(cuda.to_device(x), w, cuda.to_device(h0), cuda.to_device(c0),
                             persistent=pers)
    out[f"device_kind/{tag}"] = all(hasattr(a, "copy_to_host") and not isinstance(a, np.ndarray)
                                    for a in (y, h, c))
    out[f"device_in_out/{tag}"] = max(err(y.copy_to_host(), yr), err(h.copy_to_host(), hr),
                                      err(c.copy_to_host(), cr))

# the automatic choice at these sizes, and a case over the budget
out["auto_picks_persistent_small"] = kc.persistent_fits(S(3, 8), 2)
out["auto_picks_step_large"] = not kc.persistent_fits(S(3, 64), 2)

# the stream: T steps one at a time == the whole sequence, then state get/set
spec = S(3, 5, num_layers=2, proj_size=2)
w = el.LSTMWeights.random(spec, seed=4)
x = rng.standard_normal((4, 2, 3)).astype(np.float32)
yr, (hr, cr) = lstm_reference(x, w)
s = kc.CudaStream(w, batch=2)
ys = np.stack([s.step(x[t]) for t in range(4)])
out["stream"] = max(err(ys, yr), err(s.h, hr), err(s.c, cr))
s.reset()
out["stream_reset"] = float(np.abs(s.h).max() + np.abs(s.c).max())
s.h, s.c = hr.astype(np.float32), cr.astype(np.float32)           # resume from the final state
x2 = rng.standard_normal((2, 2, 3)).astype(np.float32)
yr2, _ = lstm_reference(x2, w, hr, cr)
y2 = np.stack([s.step(cuda.to_device(x2[t])).copy_to_host() for t in range(2)])
out["stream_set_state_device_step"] = err(y2, yr2)
s1 = kc.CudaStream(el.LSTMWeights.random(S(3, 4), seed=5), batch=1)
out["stream_batch1_vector"] = (list(s1.step(np.ones(3, np.float32)).shape) == [4]
                               and list(s1.step(np.ones((1, 3), np.float32)).shape) == [1, 4])

# wrong shapes never reach a kernel
bad = {}
for name, call in {
    "x_2d": lambda: kc.lstm_cuda(np.zeros((3, 3), np.float32), el.LSTMWeights.random(S(3, 4))),
    "x_wrong_E": lambda: kc.lstm_cuda(np.zeros((2, 1, 5), np.float32), el.LSTMWeights.random(S(3, 4))),
    "h0_wrong": lambda: kc.lstm_cuda(np.zeros((2, 1, 3), np.float32), el.LSTMWeights.random(S(3, 4)),
                                     h0=np.zeros((1, 2, 4), np.float32)),
    "lengths_too_long": lambda: kc.lstm_cuda(np.zeros((2, 1, 3), np.float32),
                                             el.LSTMWeights.random(S(3, 4)), lengths=[3]),
    "step_wrong": lambda: kc.CudaStream(el.LSTMWeights.random(S(3, 4)), 2).step(np.zeros((1, 3), np.float32)),
    "stream_bidir": lambda: kc.CudaStream(el.LSTMWeights.random(S(3, 4, bidirectional=True))),
    "persistent_over_budget": lambda: kc.lstm_cuda(np.zeros((1, 1, 3), np.float32),
                                                   el.LSTMWeights.random(S(3, 64)), persistent=True),
}.items():
    try:
        call()
        bad[name] = "no error"
    except (ValueError, TypeError) as e:
        bad[name] = type(e).__name__ + ": " + str(e)
out["bad_inputs"] = bad
print("RESULT " + json.dumps(out))
'''

F32_TOL = 2e-6     # float32 kernels vs the float64 reference at |values| <= a few
F64_TOL = 1e-12


@pytest.fixture(scope="module")
def sim():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    proc = subprocess.run([sys.executable, "-c", _SIM_SCRIPT], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, f"simulator run failed:\n{proc.stderr[-4000:]}"
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


_CASES = [f"{c}/{p}" for c in ("one_layer", "two_layers_bidir", "proj", "proj_bidir_two_layers",
                               "peephole_keras_bias", "peephole_no_bias", "lengths_bidir",
                               "lengths_all_short", "batch_first")
          for p in ("step", "persistent")] + [
    "hidden_wider_than_block/step", "input_wider_than_gemm_tile/auto",
    "device_in_out/step", "device_in_out/persistent", "stream", "stream_set_state_device_step"]


@pytest.mark.parametrize("case", _CASES)
def test_float32_kernels_match_reference(sim, case):
    assert sim[case] < F32_TOL, f"{case}: max error {sim[case]:.3g}"


@pytest.mark.parametrize("case", ["float64/step", "float64/persistent"])
def test_float64_kernels_match_reference(sim, case):
    assert sim[case] < F64_TOL, f"{case}: max error {sim[case]:.3g}"


@pytest.mark.parametrize("case", ["device_kind/step", "device_kind/persistent",
                                  "auto_picks_persistent_small", "auto_picks_step_large",
                                  "stream_batch1_vector"])
def test_facts(sim, case):
    assert sim[case] is True


def test_stream_reset_zeroes_state(sim):
    assert sim["stream_reset"] == 0.0


@pytest.mark.parametrize("name,needle", [
    ("x_2d", "x: expected a 3-d array"), ("x_wrong_E", "input_size"), ("h0_wrong", "h0"),
    ("lengths_too_long", "lengths"), ("step_wrong", "x_t"), ("stream_bidir", "bidirectional"),
    ("persistent_over_budget", "PERSISTENT_SMEM_BYTES")])
def test_bad_inputs_raise_before_any_launch(sim, name, needle):
    msg = sim["bad_inputs"][name]
    assert msg != "no error" and needle in msg, msg
