"""predict_host: the model of the CPU kernel, by hand on made-up host files (every rate a
round number), so each term of kernels/plan.py's plan is seen where it lands."""
import pytest

from edgelstm import LSTMSpec, count
from edgelstm.costmodel.api import load_target, predict  # noqa: F401
from edgelstm.costmodel.host.profile import FORMAT, load_host_file
from edgelstm.costmodel.target import TargetError

from test_predict import TOY

PIECES = dict(njit_call_s=1e-7, njit_arg_s=1e-8, inner_call_s=0, inner_arg_s=0, alloc_s=1e-8, py_alloc_s=0,
              py_view_s=0, py_threads_s=0, check_s=2e-6, wrapper_s=0, wrapper_layer_s=0, wrapper_dir_s=0)


def host_table(pieces=PIECES, rate=None, elementwise=()):
    """A [host] profile: dispatch and Python pieces, the sigmoid pass, the routine tables
    (each routine one rate everywhere) and optional [[host.elementwise]] points."""
    rate = rate or {"dot": 50, "own": 20, "block": 10, "matvec": 5}
    out = ["[host]", f"format = {FORMAT}"] + [f"{k} = {v!r}" for k, v in pieces.items()]
    out += ["[host.sigmoid_ns]", "float32 = 1.0", "[host.sigmoid_pass_ns]", "float32 = 10.0",
            "[host.kernel]", "gemm_min_batch = 32", "max_rows_per_block = 8"]
    for routine, th in (("dot", 2), ("own", 1), ("own", 2), ("block", 1), ("block", 2), ("matvec", 1), ("matvec", 2)):
        for m in (1, 1024):
            for k in (32, 1024):
                out += ["[[host.gemm]]", f'routine = "{routine}"', 'dtype = "float32"', f"threads = {th}",
                        f"m = {m}", f"k = {k}", f"n = {4 * k}", f"GFLOP_per_s = {rate[routine]}"]
    for r, th, b, h, ns in elementwise:
        out += ["[[host.elementwise]]", f'routine = "{r}"', 'dtype = "float32"', f"threads = {th}",
                f"hidden = {h}", f"batch = {b}", f"ns_per_row = {ns}"]
    return "\n".join(out) + "\n"


GENERIC = TOY.replace('kind = "accelerator"', 'kind = "host"\ncores = 2').replace(
    "step_s = 1e-6", "step_s = 1e-6\nparallel_step_s = 3e-6")
HOSTY = GENERIC + host_table()


def _host(tmp_path, text=HOSTY, name="hosty.toml"):
    f = tmp_path / name
    f.write_text(text)
    return load_host_file(f)


def test_host_kernel_rows_path_by_hand(tmp_path, monkeypatch):
    """B=8 on 2 threads: two blocks of 4 rows, one per thread, each step a 4-row small GEMM
    at the "block" rate and 4 epilogues; the projection at the serial "own" rate (below
    parallel_projection_min_macs); the two blocks go through guard.run_two (kernels/plan.py:
    recurrence "two_blocks"), not a Numba parallel region, so no region cost. With the default
    two_block_min_macs this little work stays on one core: one block of 8 rows per step."""
    from edgelstm.kernels.cpu import config as kc
    from edgelstm.kernels.plan import plan_layer
    spec = LSTMSpec(input_size=32, hidden_size=32)
    B, T, H = 8, 10, 32
    assert T * B * 32 * 4 * H < kc.parallel_projection_min_macs and B < kc.gemm_min_batch
    proj = 2 * T * B * 32 * 4 * H / 20e9
    row = count(spec, batch=B, seq_len=T, dtype="float32").layers[0]
    elementwise = (row.flops_per_step - 2 * row.macs_per_step) / B
    epi_row = (10.0 + 5 * H * 1.0) * 1e-9 + elementwise / 2e9    # one sigmoid/tanh pass over 5H
    layer = 1e-7 + 15 * 1e-8 + 4 * 1e-8      # the rows kernel's call (16 arguments), 4 scratch arrays
    assert plan_layer(T, B, 32, H, 1, 2).recurrence == "serial"
    one_core = predict(spec, _host(tmp_path), batch=B, seq_len=T, dtype="float32", threads=2)
    product8 = 2 * 8 * H * 4 * H / 10e9
    assert one_core.latency_s == pytest.approx(2e-6 + proj + layer + T * (product8 + 8 * epi_row), rel=1e-9)
    monkeypatch.setattr(kc, "two_block_min_macs", 1)
    assert plan_layer(T, B, 32, H, 1, 2).recurrence == "two_blocks"
    p = predict(spec, _host(tmp_path), batch=B, seq_len=T, dtype="float32", threads=2)
    product = 2 * 4 * H * 4 * H / 10e9
    assert p.latency_s == pytest.approx(2e-6 + proj + layer + T * (product + 4 * epi_row), rel=1e-9)


def test_host_kernel_gemm_path_follows_the_plan(tmp_path, monkeypatch):
    """B=64 on the gemm path (forced at this small H: by default it needs W_hh larger than
    gemm_min_l2_multiple L2s): without a projection the plan splits each step's own GEMM over
    two cores (recurrence "split": the 2-thread "own" rate); with one, a BLAS np.dot per step
    at the "dot" rate."""
    from edgelstm.kernels.plan import config as kc, plan_layer
    monkeypatch.setattr(kc, "gemm_min_l2_multiple", 0.0)
    t = _host(tmp_path)
    plain, projected = LSTMSpec(input_size=32, hidden_size=32), LSTMSpec(input_size=32, hidden_size=32, proj_size=16)
    assert plan_layer(10, 64, 32, 32, 1, 2).recurrence == "split"
    assert plan_layer(10, 64, 32, 32, 1, 2, proj=True).recurrence == "blas"
    a = predict(plain, t, batch=64, seq_len=10, dtype="float32", threads=2)
    # one JIT epilogue call (14 arguments) per step
    assert a.breakdown["step_overhead"] == pytest.approx(10 * (1e-7 + 13 * 1e-8))
    # (attributed to the level holding W_hh when that is not a private cache, as here: SRAM)
    product = a.breakdown["recurrent_compute"] + a.breakdown["weight_memory"]
    assert product == pytest.approx(10 * 2 * 64 * 32 * 128 / 20e9)
    b = predict(projected, t, batch=64, seq_len=10, dtype="float32", threads=2)
    product = b.breakdown["recurrent_compute"] + b.breakdown["weight_memory"]
    assert product == pytest.approx(10 * 2 * 64 * 16 * 128 / 50e9)


TABLES = (("rows", 1, 1, 16, 300.0), ("rows", 1, 1, 64, 600.0), ("rows", 2, 1, 16, 200.0),
          ("rows", 2, 1, 64, 400.0), ("gemm_step", 1, 64, 16, 350.0), ("gemm_step", 1, 64, 64, 700.0))
PIECES_T = dict(PIECES, py_alloc_s=2e-7, py_view_s=1e-7, py_threads_s=5e-7, check_s=1.5e-6)
HOSTY_TABLES = GENERIC + host_table(PIECES_T, elementwise=TABLES)


def test_host_kernel_uses_the_elementwise_tables_and_counts_the_wrapper(tmp_path, monkeypatch):
    """With [[elementwise]] tables the per-row epilogue is the table's figure, log-log
    interpolated in H (H=32 between 16 and 64: the geometric mean), at the running threads;
    the wrapper's Python pieces are counted: per call validation + get_num_threads + 5 allocs
    + 2 views; per layer and direction 3 views (+ 5 allocs + get_num_threads on the gemm path); per gemm
    step 2 views."""
    import math
    from edgelstm.kernels.cpu import config as kc
    t = _host(tmp_path, HOSTY_TABLES)
    spec = LSTMSpec(input_size=32, hidden_size=32)
    B, T, H = 8, 10, 32
    monkeypatch.setattr(kc, "two_block_min_macs", 1)     # two blocks of 4 rows, one per core
    p = predict(spec, t, batch=B, seq_len=T, dtype="float32", threads=2)
    assert T * B * 32 * 4 * H < kc.parallel_projection_min_macs and B < kc.gemm_min_batch
    call = 1.5e-6 + 5e-7 + 5 * 2e-7 + 2 * 1e-7
    proj = 2 * T * B * 32 * 4 * H / 20e9
    product = 2 * 4 * H * 4 * H / 10e9
    # two blocks through guard.run_two, both cores busy: the two-thread table, no region cost
    epi_row = math.sqrt(200.0 * 400.0) * 1e-9
    layer = 1e-7 + 15 * 1e-8 + 4 * 1e-8 + 3 * 1e-7    # the rows kernel's call (16 arguments), 4 scratch arrays; views: reshape, h_n[i], c_n[i]
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
    # gemm path (forced at this H): the gemm_step table per row; H=128 is past the table:
    # proportional to H; without a projection the plan splits the batch over two cores: 32 rows per core
    monkeypatch.setattr(kc, "gemm_min_l2_multiple", 0.0)
    g = predict(LSTMSpec(input_size=32, hidden_size=128), t, batch=64, seq_len=T, dtype="float32", threads=2)
    assert g.breakdown["epilogue"] == pytest.approx(T * 32 * 700.0 * 2 * 1e-9)
    assert g.breakdown["step_overhead"] == pytest.approx(T * (1e-7 + 13 * 1e-8 + 2 * 1e-7))   # 14 arguments, 2 views


def test_projected_rows_take_the_finish_proj_table(tmp_path):
    """With a projection each row's epilogue adds h = W_hr hf: the "finish_proj" table
    (measured at P = H/2) scaled by P / (H/2); without the table, 2HP at the matvec rate."""
    import math
    tables = TABLES + (("finish_proj", 1, 1, 16, 100.0), ("finish_proj", 1, 1, 64, 400.0))
    t = _host(tmp_path, GENERIC + host_table(PIECES_T, elementwise=tables), name="proj.toml")
    t0 = _host(tmp_path, HOSTY_TABLES, name="noproj.toml")
    H, T = 32, 10
    plain = LSTMSpec(input_size=32, hidden_size=H)
    e0 = predict(plain, t, batch=1, seq_len=T, dtype="float32", threads=1).breakdown["epilogue"]
    for P in (8, 16, 24):
        spec = LSTMSpec(input_size=32, hidden_size=H, proj_size=P)
        e = predict(spec, t, batch=1, seq_len=T, dtype="float32", threads=1).breakdown["epilogue"]
        fp = math.sqrt(100.0 * 400.0) * 1e-9 * P / (H // 2)     # log-log between H=16 and 64
        assert e == pytest.approx(e0 + T * fp, rel=1e-9)
        ew = predict(spec, t0, batch=1, seq_len=T, dtype="float32", threads=1).breakdown["epilogue"]
        assert ew == pytest.approx(e0 + T * 2 * H * P / 5e9, rel=1e-9)    # the matvec table: 5 GFLOP/s


def test_a_narrow_projection_takes_the_rate_of_its_reduction_length(tmp_path):
    """The "own" table's points are W of 4k x k. A projection with a short reduction (4K < N)
    in the dot form is charged no more than the point with its reduction length (k = K); one
    of the table's aspect (N = 4K) is charged by its size as before."""
    import math
    from edgelstm.costmodel.host.model import gemm_flops_per_s, projection_rate
    text = HOSTY
    for m in (1, 1024):      # "own" at k=32: 5 GFLOP/s, at k=1024: 50 (one thread)
        old = (f'routine = "own"\ndtype = "float32"\nthreads = 1\nm = {m}\nk = 32\nn = 128\n'
               f'GFLOP_per_s = 20\n')
        assert old in text
        text = text.replace(old, old.replace("= 20", "= 5"))
        old = old.replace("k = 32\nn = 128", "k = 1024\nn = 4096")
        text = text.replace(old, old.replace("= 20", "= 50"))
    t = _host(tmp_path, text, name="own.toml")
    at = lambda kn: math.exp(math.log(5) + (math.log(kn) - math.log(32 * 128)) / (math.log(1024 * 4096)
                             - math.log(32 * 128)) * (math.log(50) - math.log(5))) * 1e9
    assert gemm_flops_per_s(t, "float32", 1, 256, 128 * 8192, "own") == pytest.approx(at(128 * 8192))
    assert projection_rate(t, "float32", 1, 256, 128, 8192, "own") == pytest.approx(at(128 * 512))
    assert projection_rate(t, "float32", 1, 256, 128, 512, "own") == pytest.approx(at(128 * 512))
    assert at(128 * 512) < at(128 * 8192)


def test_matvec_rate_not_interpolated_across_a_shared_level(tmp_path):
    """The matvec streams its matrix: a matrix held in a shared level (here L3) takes the rate
    measured there, not one interpolated towards a point measured in a private cache (L2).
    The block GEMM still interpolates."""
    import dataclasses
    import math
    from edgelstm.costmodel.host.model import gemm_flops_per_s
    from edgelstm.costmodel.target import MemoryLevel
    old = 'routine = "matvec"\ndtype = "float32"\nthreads = 1\nm = 1\nk = 32\nn = 128\nGFLOP_per_s = 5\n'
    assert old in HOSTY
    t = _host(tmp_path, HOSTY.replace(old, old.replace("= 5", "= 80")))
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
    t = _host(tmp_path, GENERIC + host_table(dict(PIECES_T, wrapper_s=4e-6, wrapper_layer_s=6e-7, wrapper_dir_s=2e-7),
                                             elementwise=TABLES))
    base = _host(tmp_path, HOSTY_TABLES, "plain.toml")
    assert t.profile.wrapper_s == 4e-6 and base.profile.wrapper_s == 0.0
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
