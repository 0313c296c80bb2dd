"""int8 LSTM models at B=1: edgelstm's Numba int8 kernel against the LiteRT and TFLM interpreters on the same
.tflite file, same process, same thread count (1: the kernel runs one batch row on one thread).

    python -m pytest bench/bench_int8.py --benchmark-only      # pytest-benchmark, one group per model
    python bench/bench_int8.py [--rounds 200]                   # interleaved medians and ratios, one table

Models: keyword-spotting sized (T=49, E 40..260, H 64..128, int8 LSTM + FC head over the flattened
sequence + softmax, as tflite-micro's micro_speech_lstm), that public model itself, and MNIST sized
(T=28 rows of E=28 pixels; tflite-micro's mnist_lstm example and an H=128 one). Exported models come from
edgelstm.quantize with random weights: speed does not depend on the values. Every callable runs once
before timing (JIT compilation, packing, tensor allocation excluded); inputs are built outside the
timed region. extra_info records MACs per call (edgelstm.count_int8_lstm) and the GMAC/s reached.
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np
import pytest

import edgelstm as el
from edgelstm.tflite import TFLiteModel, quantize, read_tflite, write_tflite

THREADS = 1
DATA = os.path.join(os.path.dirname(__file__), "..", "tests", "data")


def _exported(E, H, T, classes=12):
    rng = np.random.default_rng(0)
    w = el.LSTMWeights.random(el.LSTMSpec(E, H, bias="keras"), seed=0, scale=0.3)
    m = quantize(w, rng.standard_normal((T, 16, E)), head=rng.standard_normal((classes, T * H)) * 0.05,
                 head_bias=rng.standard_normal(classes) * 0.1, head_over="sequence", softmax=True)
    return write_tflite(m.graph)


def _public(name):
    with open(os.path.join(DATA, name), "rb") as f:
        return f.read()


MODELS = {
    "kws_E40_H64": lambda: _exported(40, 64, 49),
    "kws_E257_H80": lambda: _exported(257, 80, 49),
    "kws_E260_H128": lambda: _exported(260, 128, 49),
    "micro_speech_lstm": lambda: _public("tflm_micro_speech_lstm_int8.tflite"),
    "mnist_lstm_H20": lambda: _public("tflm_mnist_lstm_int8.tflite"),
    "mnist_E28_H128": lambda: _exported(28, 128, 28, classes=10),
}


def runners(data: bytes):
    """{peer: callable()} running one inference of the same input; the edgelstm model."""
    numba_threads()
    m = TFLiteModel(read_tflite(data))
    x = np.random.default_rng(1).integers(-128, 128, size=m.input_shape).astype(np.int8)
    out = {"edgelstm": lambda: m(x)}
    try:
        from ai_edge_litert.interpreter import Interpreter
        lite = Interpreter(model_content=data, num_threads=THREADS)
        lite.allocate_tensors()
        i_in = lite.get_input_details()[0]["index"]
        i_out = lite.get_output_details()[0]["index"]

        def litert():
            lite.set_tensor(i_in, x)
            lite.invoke()
            return lite.get_tensor(i_out)
        out["litert"] = litert
    except ImportError:
        pass
    try:
        from tflite_micro.python.tflite_micro import runtime
        tf = runtime.Interpreter.from_bytes(data)

        def tflm():
            tf.reset()
            tf.set_input(x, 0)
            tf.invoke()
            return tf.get_output(0)
        out["tflm"] = tflm
    except ImportError:
        pass
    for f in out.values():
        f()
    return out, m


def numba_threads():
    import numba
    numba.set_num_threads(min(THREADS, numba.config.NUMBA_NUM_THREADS))


def macs(m: TFLiteModel) -> int:
    return el.count_int8_lstm(m.spec, batch=m.batch, seq_len=m.seq_len).macs


@pytest.mark.parametrize("peer", ["edgelstm", "litert", "tflm"])
@pytest.mark.parametrize("model", list(MODELS))
def test_int8_b1(benchmark, model, peer):
    fns, m = runners(MODELS[model]())
    if peer not in fns:
        pytest.skip(f"{peer} is not installed (test extra)")
    benchmark.group = model
    benchmark.extra_info.update(model=model, macs=macs(m), T=m.seq_len, spec=str(m.spec))
    benchmark(fns[peer])
    benchmark.extra_info["GMAC_per_s"] = macs(m) / benchmark.stats.stats.median / 1e9
    benchmark.extra_info["GFLOP_per_s"] = 2 * benchmark.extra_info["GMAC_per_s"]     # conftest's summary


def interleaved(fns, rounds: int):
    """Median seconds per peer: each round runs every peer once, in a rotating order."""
    names = list(fns)
    times = {n: [] for n in names}
    for r in range(rounds):
        for n in names[r % len(names):] + names[:r % len(names)]:
            t0 = time.perf_counter()
            fns[n]()
            times[n].append(time.perf_counter() - t0)
    return {n: float(np.median(v)) for n, v in times.items()}


def litert_vs_tflm(data: bytes, inputs: int = 5):
    """(fraction identical, max |difference|) of the LSTM's int8 output, LiteRT against TFLM."""
    from ai_edge_litert.interpreter import Interpreter
    from tflite_micro.python.tflite_micro import runtime
    g = read_tflite(data)
    i_lstm = next(o.outputs[0] for o in g.operators if o.op == "UNIDIRECTIONAL_SEQUENCE_LSTM")
    import warnings
    with warnings.catch_warnings():                  # "preserve all tensors is for debugging": it is
        warnings.simplefilter("ignore")
        lite = Interpreter(model_content=data, num_threads=THREADS, experimental_preserve_all_tensors=True)
    lite.allocate_tensors()
    tf = runtime.Interpreter.from_bytes(data, intrepreter_config=runtime.InterpreterConfig.kPreserveAllTensors)
    same, worst = [], 0
    for seed in range(inputs):
        x = np.random.default_rng(seed).integers(-128, 128, size=g.tensors[g.inputs[0]].shape).astype(np.int8)
        lite.reset_all_variables()                   # both keep the LSTM state across invokes
        lite.set_tensor(lite.get_input_details()[0]["index"], x)
        lite.invoke()
        a = lite.get_tensor(i_lstm).astype(np.int64)
        tf.reset()
        tf.set_input(x, 0)
        tf.invoke()
        b = np.asarray(tf.GetTensor(i_lstm, 0)["tensor_data"]).astype(np.int64).reshape(a.shape)
        same.append(np.mean(a == b))
        worst = max(worst, int(np.abs(a - b).max()))
    return float(np.mean(same)), worst


def main(argv=None):
    import argparse
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=200)
    args = p.parse_args(argv)
    print(f"B=1, {THREADS} thread(s), {args.rounds} interleaved rounds, medians")
    print(f"{'model':<20}{'MMAC':>7}{'edgelstm us':>13}{'GMAC/s':>8}{'litert us':>11}{'tflm us':>10}"
          f"{'litert/edgelstm':>17}{'tflm/edgelstm':>15}  LSTM output litert==tflm")
    for name, make in MODELS.items():
        fns, m = runners(make())
        med = interleaved(fns, args.rounds)
        n = macs(m)
        same = "-"
        if {"litert", "tflm"} <= set(fns):
            frac, worst = litert_vs_tflm(make())
            same = f"{frac:.1%} (max {worst})"
        mine = med["edgelstm"]
        print(f"{name:<20}{n / 1e6:>7.2f}{mine * 1e6:>13.0f}{n / mine / 1e9:>8.2f}"
              f"{med.get('litert', float('nan')) * 1e6:>11.0f}{med.get('tflm', float('nan')) * 1e6:>10.0f}"
              f"{med.get('litert', float('nan')) / mine:>17.2f}{med.get('tflm', float('nan')) / mine:>15.2f}"
              f"  {same}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
