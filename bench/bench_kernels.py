"""edgelstm.lstm / LSTMStream against torch.nn.LSTM and onnxruntime's LSTM, same inputs,
same process, 2 threads each.

    python -m pytest bench/bench_kernels.py --benchmark-only
    python bench/bench_kernels.py [--contention]     # the issue-12 table, interleaved medians

`test_interleaved` times every peer of a case in turn, round after round (a disturbance on a
shared machine then hits all peers alike), and records the median of each, edgelstm's ratio
to each peer (> 1: edgelstm faster) and its share of the roofline bound computed from the
calibrated host target (edgelstm.sweep.roofline_s). `test_contention` does the same for B=1
with and without a child process that keeps one core busy (a plain busy loop) and records how
much each peer's latency grows.

Inputs and peers are built outside the timed region; every callable runs once before timing
so JIT compilation (and lazy packing) is excluded. extra_info records the spec, batch, T,
FLOPs per call (edgelstm.count: the project's one counting convention) and the GFLOP/s
reached. bench/conftest.py prints each group's median ratios at the end.
"""
from __future__ import annotations

import os
import sys

# --passive (script mode) or EDGELSTM_BENCH_PASSIVE=1: the peers' thread pools sleep between
# calls (OpenMP's OMP_WAIT_POLICY=PASSIVE for torch, no intra-op spinning for onnxruntime).
# Timed in turn in one process, a peer whose threads keep spinning after its call takes the
# cores from the next one: on the loaded shared machine torch's spinning made every other
# peer (and itself) 5-10x slower. Must be decided before torch is imported.
PASSIVE = "--passive" in sys.argv or os.environ.get("EDGELSTM_BENCH_PASSIVE") == "1"
if PASSIVE:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import edgelstm as el
from edgelstm.convert import to_onnx, torch_lstm_kwargs
from edgelstm.run import LSTMStream, lstm

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

THREADS = 2


@pytest.fixture(scope="module", autouse=True)
def _threads():
    import numba
    torch.set_num_threads(THREADS)
    numba.set_num_threads(THREADS)


# ---------------------------------------------------------------------------------------
# peers
# ---------------------------------------------------------------------------------------
def torch_module(weights):
    m = torch.nn.LSTM(**torch_lstm_kwargs(weights.spec))
    m.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in weights.to_torch_state_dict().items()})
    return m.to(torch.float64 if weights.dtype == np.float64 else torch.float32).eval()


def ort_session(weights, batch, seq_len, with_lengths=False):
    """One ONNX LSTM node per layer, its y reshaped to (T, B, D*H) between layers."""
    from onnx import TensorProto, helper, numpy_helper
    spec = weights.spec
    D = spec.num_directions
    direction = "bidirectional" if spec.bidirectional else "forward"
    elem = TensorProto.DOUBLE if weights.dtype == np.float64 else TensorProto.FLOAT
    H = spec.hidden_size
    nodes, inits = [], []
    inputs = [helper.make_tensor_value_info("x", elem, [seq_len, batch, spec.input_size])]
    if with_lengths:
        inputs.append(helper.make_tensor_value_info("lengths", TensorProto.INT32, [batch]))
    cur = "x"
    for l, t in enumerate(to_onnx(weights)):
        names = [cur]
        for key in ("W", "R", "B"):
            inits.append(numpy_helper.from_array(np.ascontiguousarray(t[key]), f"{key}{l}"))
            names.append(f"{key}{l}")
        names.append("lengths" if with_lengths else "")
        nodes.append(helper.make_node("LSTM", names, [f"y{l}", f"h{l}", f"c{l}"],
                                      hidden_size=H, direction=direction))
        # y (T, D, B, H) -> (T, B, D*H): the next layer's input, as edgelstm's y
        perm = f"y{l}t"
        nodes.append(helper.make_node("Transpose", [f"y{l}"], [perm], perm=[0, 2, 1, 3]))
        shape = f"shape{l}"
        inits.append(numpy_helper.from_array(np.array([seq_len, batch, D * H], np.int64), shape))
        nodes.append(helper.make_node("Reshape", [perm, shape], [f"x{l + 1}"]))
        cur = f"x{l + 1}"
    graph = helper.make_graph(nodes, "lstm", inputs,
                              [helper.make_tensor_value_info(cur, elem, [seq_len, batch, D * H])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = THREADS
    opts.inter_op_num_threads = 1
    if PASSIVE:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


# ---------------------------------------------------------------------------------------
# cases
# ---------------------------------------------------------------------------------------
CASES = {
    # name: (spec, batch, seq_len, dtype, variable lengths)
    "b1-E40-H64": (el.LSTMSpec(40, 64), 1, 100, "float32", False),
    "b1-E128-H256-L2": (el.LSTMSpec(128, 256, num_layers=2), 1, 100, "float32", False),
    "b1-E64-H192-bi": (el.LSTMSpec(64, 192, bidirectional=True), 1, 100, "float32", False),
    "b64-E512-H1024": (el.LSTMSpec(512, 1024), 64, 100, "float32", False),
    "b4-E128-H128-f64": (el.LSTMSpec(128, 128), 4, 100, "float64", False),
    "b1-E128-H256-f64": (el.LSTMSpec(128, 256), 1, 100, "float64", False),
    "b1-E128-H256-P128": (el.LSTMSpec(128, 256, proj_size=128), 1, 100, "float32", False),
    "b2-E256-H256": (el.LSTMSpec(256, 256), 2, 100, "float32", False),   # the B=2-4 team
    "b8-E128-H256-P64": (el.LSTMSpec(128, 256, proj_size=64), 8, 100, "float32", False),
    "b16-E128-H256-varlen": (el.LSTMSpec(128, 256), 16, 100, "float32", True),
}
PEERS = ("edgelstm", "torch", "onnxruntime")


def _case(name):
    spec, B, T, dtype, varlen = CASES[name]
    w = el.LSTMWeights.random(spec, seed=1, dtype=dtype)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((T, B, spec.input_size)).astype(dtype)
    lengths = rng.integers(T // 2, T + 1, size=B) if varlen else None
    if lengths is not None:
        lengths[0] = T
    return spec, B, T, w, x, lengths


def _runner(peer, w, x, lengths):
    T, B = x.shape[:2]
    if peer == "edgelstm":
        return lambda: lstm(x, w, lengths=lengths)
    if peer == "torch":
        m, xt = torch_module(w), torch.from_numpy(x)
        if lengths is None:
            def run():
                with torch.inference_mode():
                    return m(xt)
            return run
        lt = torch.from_numpy(np.asarray(lengths, np.int64))

        def run_packed():
            with torch.inference_mode():
                packed = torch.nn.utils.rnn.pack_padded_sequence(xt, lt, enforce_sorted=False)
                y, state = m(packed)
                return torch.nn.utils.rnn.pad_packed_sequence(y, total_length=T), state
        return run_packed
    if w.spec.proj_size or w.dtype == np.float64:
        pytest.skip("onnxruntime: no projection in ONNX's LSTM; float64 LSTM not in its CPU kernels")
    sess = ort_session(w, B, T, with_lengths=lengths is not None)
    feed = {"x": x}
    if lengths is not None:
        feed["lengths"] = np.asarray(lengths, np.int32)
    return lambda: sess.run(None, feed)


def _record(benchmark, spec, B, T, dtype, varlen=False):
    flops = el.count(spec, batch=B, seq_len=T, dtype=dtype).flops_per_sequence
    benchmark.extra_info.update(spec=repr(spec), batch=B, seq_len=T, dtype=dtype,
                                variable_lengths=varlen, flops=flops)
    return flops


@pytest.mark.parametrize("peer", PEERS)
@pytest.mark.parametrize("case", list(CASES))
def test_sequence(benchmark, case, peer):
    spec, B, T, w, x, lengths = _case(case)
    run = _runner(peer, w, x, lengths)
    run()                                          # JIT compile, pack weights, warm caches
    benchmark.group = case
    flops = _record(benchmark, spec, B, T, w.dtype.name, lengths is not None)
    big = flops > 5e9
    if big:
        benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)
    else:
        benchmark(run)
    benchmark.extra_info["GFLOP_per_s"] = flops / benchmark.stats.stats.median / 1e9


@pytest.mark.parametrize("peer", ("edgelstm", "edgelstm-out", "torch"))
def test_stream_step(benchmark, peer):
    """One time step per call, B=1, H=128: LSTMStream.step against torch with the state fed back.
    "edgelstm" is the default form (a new array per step), "edgelstm-out" step(x_t, out=buf)."""
    spec = el.LSTMSpec(128, 128)
    w = el.LSTMWeights.random(spec, seed=1)
    x_t = np.random.default_rng(3).standard_normal(128).astype(np.float32)
    if peer == "edgelstm":
        s = LSTMStream(w)
        run = lambda: s.step(x_t)
    elif peer == "edgelstm-out":
        s, buf = LSTMStream(w), np.empty(128, np.float32)
        run = lambda: s.step(x_t, out=buf)
    else:
        m = torch_module(w)
        xt = torch.from_numpy(x_t).reshape(1, 1, 128)
        state = [(torch.zeros(1, 1, 128), torch.zeros(1, 1, 128))]

        def run():
            with torch.inference_mode():
                y, state[0] = m(xt, state[0])
            return y
    run()
    benchmark.group = "stream-step-B1-E128-H128"
    flops = _record(benchmark, spec, 1, 1, "float32")
    benchmark(run)
    benchmark.extra_info["GFLOP_per_s"] = flops / benchmark.stats.stats.median / 1e9


# ---------------------------------------------------------------------------------------
# interleaved ratios, roofline share, contention
# ---------------------------------------------------------------------------------------
def _peers(name):
    """{peer: callable} for one case, each run once (JIT, packing, warm caches)."""
    spec, B, T, w, x, lengths = _case(name)
    runs = {}
    for peer in PEERS:
        try:
            runs[peer] = _runner(peer, w, x, lengths)
        except pytest.skip.Exception:
            continue
    for f in runs.values():
        f()
        f()
    return runs


SETTLE_S = 0.0      # --settle: a quiet gap before every timed call (see interleaved_medians)


def interleaved_medians(runs: dict, rounds: int, budget_s: float = None, settle_s: float = None) -> dict:
    """Median seconds per peer, the peers timed in turn in every round. settle_s (default
    SETTLE_S): sleep this long before each timed call, so that no peer runs while the previous
    one's thread pool is still spinning (onnxruntime's workers spin about 40 ms after a call,
    torch's OpenMP team about 10 ms, measured on the test VM): each peer then starts from a quiet
    machine with its own default settings, as one runtime alone in an application would."""
    import statistics
    import time
    settle_s = SETTLE_S if settle_s is None else settle_s
    times = {p: [] for p in runs}
    start = time.perf_counter()
    for r in range(rounds):
        for p, f in runs.items():
            if settle_s:
                time.sleep(settle_s)
            t0 = time.perf_counter()
            f()
            times[p].append(time.perf_counter() - t0)
        if budget_s and r >= 4 and time.perf_counter() - start > budget_s:
            break
    return {p: statistics.median(v) for p, v in times.items()}


def _host_target():
    try:
        return el.load_target("host")
    except Exception:            # no calibration possible here: no roofline figures
        return None


def case_row(name, rounds=None, target=None) -> dict:
    """The case's medians, edgelstm's speed-up over each peer and its share of the roofline."""
    from edgelstm.sweep import roofline_s
    spec, B, T, dtype, _ = CASES[name]
    runs = _peers(name)
    big = el.count(spec, batch=B, seq_len=T, dtype=dtype).flops_per_sequence > 5e9
    med = interleaved_medians(runs, rounds or (7 if big else 41), budget_s=60)
    row = {"case": name, "median_s": med,
           "speedup": {p: med[p] / med["edgelstm"] for p in med if p != "edgelstm"}}
    if target is not None:
        roof = roofline_s(spec, target, B, T, dtype, THREADS)
        row["roofline_s"] = roof
        row["roofline_pct"] = 100 * roof / med["edgelstm"]
    return row


@pytest.mark.parametrize("case", list(CASES))
def test_interleaved(benchmark, case):
    row = case_row(case, target=_host_target())
    benchmark.group = "interleaved-" + case
    benchmark.extra_info.update({k: v for k, v in row.items() if k != "case"})
    run = _runner("edgelstm", *_case(case)[3:])
    benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)


def _busy_child():
    """A child process that keeps one core busy until killed."""
    import subprocess
    import sys
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def contention_row(name="b1-E40-H64", rounds=41) -> dict:
    """Medians without and with a busy child process, and each peer's growth (with / without)."""
    import time
    runs = _peers(name)
    idle = interleaved_medians(runs, rounds, budget_s=60)
    child = _busy_child()
    try:
        time.sleep(0.2)
        busy = interleaved_medians(runs, rounds, budget_s=60)
    finally:
        child.kill()
        child.wait()
    return {"case": name, "idle_s": idle, "busy_s": busy, "growth": {p: busy[p] / idle[p] for p in idle}}


@pytest.mark.parametrize("case", ["b1-E40-H64", "b1-E128-H256-L2"])
def test_contention(benchmark, case):
    row = contention_row(case)
    benchmark.group = "contention-" + case
    benchmark.extra_info.update({k: v for k, v in row.items() if k != "case"})
    run = _runner("edgelstm", *_case(case)[3:])
    benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)


_WARM_START = """
import time
t0 = time.perf_counter()
import numpy as np
import edgelstm as el
t1 = time.perf_counter()
w = el.LSTMWeights.random(el.LSTMSpec(40, 64), seed=0, dtype="float32")
el.lstm(np.ones((100, 1, 40), np.float32), w)
t2 = time.perf_counter()
print(t1 - t0, t2 - t1)
"""


def warm_start_s() -> tuple:
    """(import seconds, first lstm() seconds, whole process seconds) of a fresh interpreter
    whose Numba cache is warm (this process has compiled and cached the kernels first)."""
    import subprocess
    import sys
    import time
    subprocess.run([sys.executable, "-c", _WARM_START], check=True, capture_output=True)  # warms the cache
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", _WARM_START], check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    imp, first = map(float, out.stdout.split())
    return imp, first, wall


def test_warm_start(benchmark):
    benchmark.group = "warm-start"
    imp, first, wall = warm_start_s()
    benchmark.extra_info.update(import_s=imp, first_lstm_s=first, process_s=wall)
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)


def _main(argv=None):
    import argparse
    import numba
    ap = argparse.ArgumentParser(description="edgelstm against torch and onnxruntime, interleaved medians")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--contention", action="store_true", help="also the busy-core measurement")
    ap.add_argument("--passive", action="store_true", help="peers' thread pools sleep between calls (see PASSIVE)")
    ap.add_argument("--warm-start", action="store_true", help="also a second process's first result")
    ap.add_argument("--settle", type=float, default=0.0, metavar="MS",
                    help="sleep this many ms before every timed call (peers' spinning pools go quiet; 50 is enough)")
    args = ap.parse_args(argv)
    global SETTLE_S
    SETTLE_S = args.settle / 1e3
    torch.set_num_threads(THREADS)
    numba.set_num_threads(THREADS)
    target = _host_target()
    print(f"threads {THREADS}; peers {'passive' if PASSIVE else 'with their default spinning'}; "
          f"settle {args.settle:g} ms; load average {os.getloadavg()[0]:.1f}")
    print("| case | edgelstm | torch | onnxruntime | x torch | x onnxruntime | % of roofline |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in args.cases.split(","):
        r = case_row(name, target=target)
        m, sp = r["median_s"], r["speedup"]
        cell = lambda p: f"{m[p] * 1e3:.3f} ms" if p in m else "–"
        ratio = lambda p: f"{sp[p]:.2f}" if p in sp else "–"
        roof = f"{r['roofline_pct']:.0f}" if "roofline_pct" in r else "–"
        print(f"| {name} | {cell('edgelstm')} | {cell('torch')} | {cell('onnxruntime')} | {ratio('torch')} "
              f"| {ratio('onnxruntime')} | {roof} |", flush=True)
    w = el.LSTMWeights.random(el.LSTMSpec(128, 128), seed=1)
    x_t = np.random.default_rng(3).standard_normal(128).astype(np.float32)
    stream, m = LSTMStream(w), torch_module(w)
    xt, state = torch.from_numpy(x_t).reshape(1, 1, 128), [(torch.zeros(1, 1, 128), torch.zeros(1, 1, 128))]

    def torch_step():
        with torch.inference_mode():
            y, state[0] = m(xt, state[0])
    med = interleaved_medians({"edgelstm": lambda: stream.step(x_t), "torch": torch_step}, 2001, budget_s=20,
                               settle_s=0.0)   # one step per call: a gap would time wake-ups, not steps
    print(f"\nstream step B=1 E=128 H=128: edgelstm {med['edgelstm'] * 1e6:.1f} us, torch {med['torch'] * 1e6:.1f} us, "
          f"x{med['torch'] / med['edgelstm']:.1f}")
    if args.warm_start:
        runs = [warm_start_s() for _ in range(3)]
        for imp, first, wall in runs:
            print(f"warm start: import {imp:.3f} s + first lstm() {first:.3f} s = {imp + first:.3f} s "
                  f"(process wall {wall:.3f} s)")
    if args.contention:
        print("\n| case | peer | idle | one core busy | growth |\n| --- | --- | ---: | ---: | ---: |")
        for name in ("b1-E40-H64", "b1-E128-H256-L2"):
            r = contention_row(name)
            for p in r["idle_s"]:
                print(f"| {name} | {p} | {r['idle_s'][p] * 1e3:.3f} ms | {r['busy_s'][p] * 1e3:.3f} ms "
                      f"| {r['growth'][p]:.2f}x |", flush=True)


if __name__ == "__main__":
    _main()


def barrier_crossing_s(n=20000) -> float:
    """Seconds per crossing of the team's two-thread step barrier (kernels/team.py) with no
    work between crossings: the floor of the team's per-step cost on this machine now (the
    same micro-benchmark as calibration's, costmodel/host/micro.py)."""
    from edgelstm.costmodel.host.micro import barrier_crossing_s as crossing
    return crossing(n)


def test_barrier_crossing(benchmark):
    benchmark.group = "team-barrier"
    crossings = [barrier_crossing_s() for _ in range(5)]
    benchmark.extra_info["crossing_s"] = crossings
    benchmark.pedantic(barrier_crossing_s, rounds=1, iterations=1)
