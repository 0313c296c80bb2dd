"""predict(): the roofline arithmetic by hand, the bound switching, monotonicity, and
that batch, hoisting and the implementation move the weight traffic as they should."""
import pytest

from edgelstm import LSTMSpec, count
from edgelstm.costmodel.predict import PredictError, place_weights, predict
from edgelstm.costmodel.target import TargetError, load_target

TOY = '''
name = "toy"
kind = "accelerator"
clock_MHz = 1000
source = "made up"
[macs_per_cycle]
float32 = 1
source = "made up"
[overhead]
call_s = 2e-6
step_s = 1e-6
source = "made up"
[transcendental]
cycles = 20
source = "made up"
[[memory]]
name = "SRAM"
kind = "sram"
capacity_bytes = 1048576
bandwidth_GB_per_s = 100
energy_pJ_per_byte = 1.0
source = "made up"
[[memory]]
name = "DRAM"
kind = "dram"
capacity_bytes = 1073741824
bandwidth_GB_per_s = 0.1
energy_pJ_per_byte = 100.0
source = "made up"
'''


@pytest.fixture
def toy(tmp_path):
    p = tmp_path / "toy.toml"
    p.write_text(TOY)
    return load_target(p)


def test_roofline_by_hand_not_hoisted(toy):
    # LSTMSpec(16, 32), B=1, T=1, float32, not hoisted: everything is read every step.
    spec = LSTMSpec(16, 32)
    c = count(spec, dtype="float32")
    row = c.layers[0]
    p = predict(spec, toy, hoisted=False)
    compute = row.macs_per_step / 1e9                        # 1 MAC/cycle at 1 GHz
    memory = (row.weight_bytes + row.activation_bytes_per_step) / 100e9   # both in SRAM
    elementwise = (row.flops_per_step - 2 * row.macs_per_step) / 2e9
    epilogue = row.transcendentals_per_step * 20 / 1e9 + elementwise
    expected = 2e-6 + 1e-6 + max(compute, memory) + epilogue
    assert compute > memory
    assert p.latency_s == pytest.approx(expected, rel=1e-12)
    assert p.step_latency_s == pytest.approx(expected, rel=1e-12)   # T = 1
    assert p.bound == "compute" and p.weights_level == "SRAM" and p.fits
    assert sum(p.breakdown.values()) == pytest.approx(p.latency_s, rel=1e-12)
    # Energy: Horowitz fp32 MAC 4.6 pJ, elementwise 2.3 pJ, transcendental 46 pJ; bytes 1 pJ.
    e = (row.macs_per_step * 4.6 + elementwise * 2e9 * 2.3 + row.transcendentals_per_step * 46
         + row.weight_bytes + row.activation_bytes_per_step) * 1e-12
    assert p.energy_j == pytest.approx(e, rel=1e-12)


def test_sequence_by_hand_hoisted(toy):
    spec, T = LSTMSpec(16, 32), 10
    c = count(spec, seq_len=T)
    row = c.layers[0]
    p = predict(spec, toy, seq_len=T)
    in_macs = 4 * 32 * 16
    gemm = 2 * in_macs * T / 2e9       # at peak; w_ih from SRAM is faster
    rec = max((row.macs_per_step - in_macs) / 1e9,
              (row.weight_bytes - row.input_weight_bytes + row.activation_bytes_per_step
               + row.gate_buffer_bytes_per_step) / 100e9)
    epi = row.transcendentals_per_step * 20e-9 + (row.flops_per_step - 2 * row.macs_per_step) / 2e9
    assert p.latency_s == pytest.approx(2e-6 + gemm + T * (1e-6 + rec + epi), rel=1e-12)
    assert p.weight_bytes_per_step == c.traffic["streamed_hoisted"].weight_bytes_per_step


def test_bound_switches_from_compute_in_sram_to_dram(toy):
    small = predict(LSTMSpec(32, 64), toy, seq_len=10)           # 64 KB of weights
    big = predict(LSTMSpec(32, 1024), toy, seq_len=10)           # 16 MB of weights
    assert small.weights_level == "SRAM" and small.bound == "compute"
    assert big.weights_level == "DRAM" and big.bound == "memory:DRAM"
    assert big.layers[0].weights_s > big.layers[0].compute_s


def test_placement_smallest_level_that_holds():
    m7 = load_target("cortex-m7")
    assert place_weights(m7, 100_000, 1).name == "DTCM"
    assert place_weights(m7, 300_000, 1).name == "AXI-SRAM"
    assert place_weights(m7, 1_000_000, 1).name == "flash"
    a100 = load_target("a100")
    assert place_weights(a100, 100_000, 108).name == "L2"        # smem does not survive launches
    assert place_weights(a100, 100_000, 108, on_chip_ok=True).name == "L1/shared"  # the smaller on-chip level
    assert place_weights(a100, 10 ** 9, 108).name == "HBM2e"


@pytest.mark.parametrize("target,dtype", [("cortex-m7", "int8"), ("cortex-a72", "float32"),
                                          ("a100", "float16"), ("h100", "float32"), ("toy", "float32")])
def test_more_hidden_units_never_predict_less(target, dtype, toy):
    t = toy if target == "toy" else load_target(target)
    prev = {}
    for H in (8, 16, 32, 64, 96, 128, 256, 384, 512, 1024):
        for hoisted in (True, False):
            p = predict(LSTMSpec(40, H, 2), t, batch=2, seq_len=20, dtype=dtype, hoisted=hoisted)
            cur = (p.latency_s, p.step_latency_s, p.energy_j, p.weight_bytes, p.buffer_bytes)
            if hoisted in prev:
                assert all(a >= b for a, b in zip(cur, prev[hoisted])), (H, hoisted, cur, prev[hoisted])
            prev[hoisted] = cur


def test_batch_and_hoisting_move_weight_traffic():
    spec = LSTMSpec(256, 256)
    a = predict(spec, "cortex-a72", seq_len=50, hoisted=False)
    b = predict(spec, "cortex-a72", seq_len=50, hoisted=True)
    c = count(spec, seq_len=50)
    assert a.weight_bytes_per_step == c.traffic["streamed"].weight_bytes_per_step
    assert b.weight_bytes_per_step == c.traffic["streamed_hoisted"].weight_bytes_per_step
    assert b.weight_bytes_per_step < a.weight_bytes_per_step
    assert b.breakdown["input_gemm"] > 0 and a.breakdown["input_gemm"] == 0
    # Weights read once per step for the whole batch: time per sequence element falls with B.
    p1 = predict(spec, "cortex-a72", batch=1, seq_len=50)
    p8 = predict(spec, "cortex-a72", batch=8, seq_len=50)
    assert p1.bound.startswith("memory")
    assert p8.latency_s < 8 * p1.latency_s and p8.latency_s > p1.latency_s


def test_persistent_gpu_kernel_has_no_weight_traffic_and_one_launch():
    spec = LSTMSpec(128, 256)
    fused = predict(spec, "h100", seq_len=100, dtype="float16")
    pers = predict(spec, "h100", seq_len=100, dtype="float16", implementation="persistent")
    assert fused.weights_level == "L2" and fused.bound == "overhead"
    assert pers.weight_bytes_per_step == 0 and pers.weights_level in ("registers", "L1/shared")
    assert pers.latency_s < fused.latency_s
    h = load_target("h100")
    assert fused.breakdown["step_overhead"] == pytest.approx(100 * h.step_overhead_s)
    assert pers.breakdown["step_overhead"] == pytest.approx(100 * h.persistent_step_overhead_s)


def test_memory_fit():
    kws = predict(LSTMSpec(80, 12), "cortex-m4", seq_len=100, dtype="int8")
    assert kws.fits and kws.weights_home == "flash"
    big = predict(LSTMSpec(512, 1024, 2), "cortex-m4", dtype="int8")
    assert not big.weights_fit and not big.fits and big.notes
    assert big.max_step_rate_hz == pytest.approx(1 / big.step_latency_s)


def test_errors():
    with pytest.raises(PredictError, match="implementation"):
        predict(LSTMSpec(8, 8), "h100", implementation="magic")
    with pytest.raises(PredictError, match="threads"):
        predict(LSTMSpec(8, 8), "h100", threads=0)
    with pytest.raises(TargetError, match="float16"):
        predict(LSTMSpec(8, 8), "cortex-m4", dtype="float16")


def test_cli_size_predictions_json(capsys):
    import json
    from edgelstm.cli import main
    assert main(["size", "--input-size", "80", "--hidden-size", "12", "--dtype", "int8", "--seq-len", "100",
                 "--target", "cortex-m4", "--target", "cortex-m7", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert [p["target"] for p in d["predictions"]] == ["cortex-m4", "cortex-m7"]
    assert d["predictions"][0]["latency_s"] > d["predictions"][1]["latency_s"] > 0
    assert main(["size", "--input-size", "80", "--hidden-size", "12", "--target", "cortex-m7"]) == 0
    assert "max rate" in capsys.readouterr().out


def _routine_points(dtype, rate):
    pts = []
    for routine, th in (("dot", 2), ("own", 1), ("own", 2), ("block", 1), ("block", 2), ("matvec", 1), ("matvec", 2)):
        for m in (1, 1024):
            for k in (32, 1024):
                pts.append(f'[[gemm]]\nroutine = "{routine}"\ndtype = "{dtype}"\nthreads = {th}\nm = {m}\n'
                           f'k = {k}\nn = {4 * k}\nGFLOP_per_s = {rate[routine]}\n')
    return "\n".join(pts)


HOSTY = TOY.replace('kind = "accelerator"', 'kind = "host"\ncores = 2').replace(
    "step_s = 1e-6", "step_s = 1e-6\nparallel_step_s = 3e-6\nnjit_call_s = 1e-7\nnjit_arg_s = 1e-8\n"
                     "inner_call_s = 0\ninner_arg_s = 0\nalloc_s = 1e-8").replace(
    "cycles = 20", "cycles = 20\nns_float32 = 1.0\npass_ns_float32 = 10.0") + '''
[kernel]
gemm_min_batch = 32
rows_per_block = 8
''' + _routine_points("float32", {"dot": 50, "own": 20, "block": 10, "matvec": 5})


def test_host_kernel_rows_path_by_hand(tmp_path):
    """B=8 on 2 threads: two blocks of 4 rows, one per thread, each step a 4-row small GEMM
    at the "block" rate and 4 epilogues; the projection at the serial "own" rate (below
    parallel_projection_min_macs); one parallel region per layer."""
    from edgelstm.kernels.cpu import config as kc
    f = tmp_path / "hosty.toml"
    f.write_text(HOSTY)
    spec = LSTMSpec(input_size=32, hidden_size=32)
    B, T, H = 8, 10, 32
    p = predict(spec, load_target(str(f)), batch=B, seq_len=T, dtype="float32", threads=2)
    assert T * B * 32 * 4 * H < kc.parallel_projection_min_macs and B < kc.gemm_min_batch
    proj = 2 * T * B * 32 * 4 * H / 20e9
    product = 2 * 4 * H * 4 * H / 10e9
    row = count(spec, batch=B, seq_len=T, dtype="float32").layers[0]
    elementwise = (row.flops_per_step - 2 * row.macs_per_step) / B
    epi_row = (2 * 10.0 + 5 * H * 1.0) * 1e-9 + elementwise / 2e9
    layer = 1e-7 + 14 * 1e-8 + 7 * 1e-8 + 3e-6
    assert p.latency_s == pytest.approx(2e-6 + proj + layer + T * (product + 4 * epi_row), rel=1e-9)


def test_host_kernel_gemm_path_uses_the_dot_rate_per_step(tmp_path):
    f = tmp_path / "hosty.toml"
    f.write_text(HOSTY)
    spec = LSTMSpec(input_size=32, hidden_size=32)
    t = load_target(str(f))
    a = predict(spec, t, batch=64, seq_len=10, dtype="float32", threads=2)
    # one np.dot per step at the "dot" rate, one JIT epilogue call (17 arguments) per step
    assert a.breakdown["step_overhead"] == pytest.approx(10 * (1e-7 + 16 * 1e-8))
    # (attributed to the level holding W_hh when that is not a private cache, as here: SRAM)
    product = a.breakdown["recurrent_compute"] + a.breakdown["weight_memory"]
    assert product == pytest.approx(10 * 2 * 64 * 32 * 128 / 50e9)


HOSTY_TABLES = HOSTY.replace("alloc_s = 1e-8", "alloc_s = 1e-8\npy_alloc_s = 2e-7\npy_view_s = 1e-7\n"
                                               "py_threads_s = 5e-7\ncheck_s = 1.5e-6") + "".join(
    f'\n[[elementwise]]\nroutine = "{r}"\ndtype = "float32"\nthreads = {th}\nhidden = {h}\nbatch = {b}\n'
    f'ns_per_row = {ns}\n'
    for r, th, b, pts in (("rows", 1, 1, ((16, 300.0), (64, 600.0))), ("rows", 2, 1, ((16, 200.0), (64, 400.0))),
                          ("gemm_step", 1, 64, ((16, 350.0), (64, 700.0))))
    for h, ns in pts)


def test_host_kernel_uses_the_elementwise_tables_and_counts_the_wrapper(tmp_path, monkeypatch):
    """With [[elementwise]] tables the per-row epilogue is the table's figure, log-log
    interpolated in H (H=32 between 16 and 64: the geometric mean), at the running threads;
    the wrapper's Python pieces are counted: per call validation + get_num_threads + 5 allocs
    + 2 views; per layer and direction 3 views (+ 5 allocs + get_num_threads on the gemm path); per gemm
    step 2 views."""
    import math
    from edgelstm.kernels.cpu import config as kc
    f = tmp_path / "hosty.toml"
    f.write_text(HOSTY_TABLES)
    t = load_target(str(f))
    spec = LSTMSpec(input_size=32, hidden_size=32)
    B, T, H = 8, 10, 32
    p = predict(spec, t, batch=B, seq_len=T, dtype="float32", threads=2)
    assert T * B * 32 * 4 * H < kc.parallel_projection_min_macs and B < kc.gemm_min_batch
    call = 1.5e-6 + 5e-7 + 5 * 2e-7 + 2 * 1e-7
    proj = 2 * T * B * 32 * 4 * H / 20e9
    product = 2 * 4 * H * 4 * H / 10e9
    epi_row = math.sqrt(200.0 * 400.0) * 1e-9                   # 2 threads running
    layer = 1e-7 + 14 * 1e-8 + 7 * 1e-8 + 3e-6 + 3 * 1e-7    # views: reshape, h_n[i], c_n[i]
    assert p.breakdown["call_overhead"] == pytest.approx(call)
    assert p.latency_s == pytest.approx(call + proj + layer + T * (product + 4 * epi_row), rel=1e-9)
    # B=1: one block, serial: the one-thread table
    p1 = predict(spec, t, batch=1, seq_len=T, dtype="float32", threads=2)
    assert p1.breakdown["epilogue"] == pytest.approx(T * math.sqrt(300.0 * 600.0) * 1e-9)
    # B=1 from parallel_single_block_min_steps steps: the kernel runs the parallel variant,
    # one parallel region (parallel_step_s) per layer; the epilogue from the prange table
    # (the parallel variant's parfor-lowered loop body), the serial variant's from the serial one
    monkeypatch.setattr(kc, "parallel_single_block_min_steps", 32)   # off by default in the kernel
    Tl = kc.parallel_single_block_min_steps
    pl = predict(spec, t, batch=1, seq_len=Tl, dtype="float32", threads=2)
    ps = predict(spec, t, batch=1, seq_len=Tl - 1, dtype="float32", threads=2)
    assert pl.breakdown["epilogue"] == pytest.approx(Tl * math.sqrt(200.0 * 400.0) * 1e-9)
    assert ps.breakdown["epilogue"] == pytest.approx((Tl - 1) * math.sqrt(300.0 * 600.0) * 1e-9)
    assert (pl.breakdown["input_gemm"] - ps.breakdown["input_gemm"]) == pytest.approx(
        3e-6 + 2 * 32 * 4 * H / 20e9, rel=1e-6)
    # gemm path: the gemm_step table per row; H=128 is past the table: proportional to H
    g = predict(LSTMSpec(input_size=32, hidden_size=128), t, batch=64, seq_len=T, dtype="float32", threads=2)
    assert g.breakdown["epilogue"] == pytest.approx(T * 64 * 700.0 * 2 * 1e-9)
    assert g.breakdown["step_overhead"] == pytest.approx(T * (1e-7 + 16 * 1e-8 + 2 * 1e-7))


def test_matvec_rate_not_interpolated_across_a_shared_level(tmp_path):
    """The matvec streams its matrix: a matrix held in a shared level (here L3) takes the rate
    measured there, not one interpolated towards a point measured in a private cache (L2).
    The block GEMM still interpolates."""
    import dataclasses
    import math
    from edgelstm.costmodel.predict import gemm_flops_per_s
    from edgelstm.costmodel.target import MemoryLevel
    f = tmp_path / "hosty.toml"
    f.write_text(HOSTY.replace('routine = "matvec"\ndtype = "float32"\nthreads = 1\nm = 1\nk = 32\n'
                               'n = 128\nGFLOP_per_s = 5', 'routine = "matvec"\ndtype = "float32"\n'
                               'threads = 1\nm = 1\nk = 32\nn = 128\nGFLOP_per_s = 80'))
    t = load_target(str(f))
    l2 = MemoryLevel("L2", "cache", 1 << 20, 400.0, 200.0, 1.0, shared=False)
    l3 = MemoryLevel("L3", "cache", 32 << 20, 200.0, 100.0, 2.0, shared=True)
    t = dataclasses.replace(t, memory=(l2, l3))
    # points: kn = 32*128 (16 KB, L2) at 80 GFLOP/s and 1024*4096 (16 MB, L3) at 5 GFLOP/s
    assert gemm_flops_per_s(t, "float32", 1, 1, 512 * 2048, "matvec") == pytest.approx(5e9)   # 4 MB: L3
    assert gemm_flops_per_s(t, "float32", 1, 1, 128 * 512, "matvec") == pytest.approx(80e9)  # 256 KB: L2
    # without the levels: log-log interpolation between the two points
    t0 = dataclasses.replace(t, memory=())
    f_mid = (math.log(128 * 512) - math.log(32 * 128)) / (math.log(1024 * 4096) - math.log(32 * 128))
    assert gemm_flops_per_s(t0, "float32", 1, 1, 128 * 512, "matvec") == pytest.approx(
        math.exp((1 - f_mid) * math.log(80e9) + f_mid * math.log(5e9)))
    assert gemm_flops_per_s(t, "float32", 1, 1, 512 * 2048, "block") == pytest.approx(10e9)


def test_measured_wrapper_figures_replace_the_counted_pieces(tmp_path):
    """When calibration timed lstm()'s Python side as a whole (wrapper_s per call,
    wrapper_layer_s per layer, wrapper_dir_s per direction), the model charges those and not
    the pieces it would otherwise compose (validation + get_num_threads + allocs + views)."""
    f = tmp_path / "hosty.toml"
    f.write_text(HOSTY_TABLES.replace("check_s = 1.5e-6", "check_s = 1.5e-6\nwrapper_s = 4e-6\n"
                                      "wrapper_layer_s = 6e-7\nwrapper_dir_s = 2e-7"))
    t = load_target(str(f))
    base = load_target(_write(tmp_path / "plain.toml", HOSTY_TABLES))
    assert t.wrapper_s == 4e-6 and base.wrapper_s == 0.0
    for spec, rows in ((LSTMSpec(32, 32), 1), (LSTMSpec(32, 32, num_layers=3), 3),
                       (LSTMSpec(32, 32, bidirectional=True), 2)):
        p = predict(spec, t, batch=1, seq_len=5, dtype="float32", threads=2)
        q = predict(spec, base, batch=1, seq_len=5, dtype="float32", threads=2)
        assert p.breakdown["call_overhead"] == pytest.approx(4e-6)
        assert q.breakdown["call_overhead"] == pytest.approx(1.5e-6 + 5e-7 + 5 * 2e-7 + 2 * 1e-7)
        # per layer: wrapper_layer_s once (split over its directions) + wrapper_dir_s per
        # direction, in place of 3 views (1e-7 each) per layer and direction
        D = 2 if spec.bidirectional else 1
        per_rows = spec.num_layers * 6e-7 + rows * 2e-7
        assert (p.breakdown["input_gemm"] - q.breakdown["input_gemm"]) == pytest.approx(
            per_rows - rows * 3 * 1e-7, rel=1e-6), (spec, D)


def _write(path, text):
    path.write_text(text)
    return str(path)
