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
    pers = predict(spec, "h100", seq_len=100, dtype="float16", implementation="persistent-grid")
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
    with pytest.raises(PredictError, match="persistent-block.*persistent-grid"):
        predict(LSTMSpec(8, 8), "h100", implementation="persistent")
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


def test_persistent_block_is_the_shipped_cuda_kernel():
    """'persistent-block' follows kernels/cuda.py's rule for when lstm_cuda runs its persistent
    kernel (the same budget, the same fit), and runs the weights from one SM's shared memory;
    where the kernel does not fit, the device path runs the fused kernels and so does the
    prediction. 'persistent-grid' spreads W_hh over every SM."""
    from edgelstm.costmodel.predict import PERSISTENT_BLOCK_SMEM_BYTES
    from edgelstm.kernels import cuda as kc
    assert PERSISTENT_BLOCK_SMEM_BYTES == kc.PERSISTENT_SMEM_BYTES
    for H, B, P in ((32, 1, 0), (48, 1, 0), (56, 1, 0), (64, 1, 0), (48, 8, 0), (32, 16, 0), (64, 2, 16), (96, 1, 24)):
        spec = LSTMSpec(H, H, proj_size=P)
        want = kc.model_implementation(spec, B)
        p = predict(spec, "h100", batch=B, seq_len=50, implementation="persistent-block")
        assert p.implementation == want, (H, B, P)
        assert bool(p.notes) == (want == "fused")
    small = predict(LSTMSpec(32, 32), "h100", seq_len=100, implementation="persistent-block")
    grid = predict(LSTMSpec(32, 32), "h100", seq_len=100, implementation="persistent-grid")
    assert small.weights_level == "L1/shared" and small.weight_bytes_per_step == 0
    assert small.threads == grid.threads == 132
    # one SM computes the block's step: the recurrent product is slower than on 132 SMs
    h = load_target("h100")
    assert small.layers[0].compute_s == pytest.approx(
        grid.layers[0].compute_s * h.peak_macs_per_s("float32", 132) / h.peak_macs_per_s("float32", 1))


@pytest.mark.parametrize("H,B", [(16, 1), (64, 1), (256, 1), (64, 16), (512, 64)])
def test_more_cpu_cores_never_predict_slower(H, B):
    """On a CPU target a runtime spreads a step over its cores only when that is faster
    (predict.CPU_KINDS): all cores are never predicted slower than one, where before a 1-2 µs
    step paid a parallel region each (cortex-a72: 4 cores, with a parallel region per step of
    5 µs, what calibration measured on the 2-core host)."""
    from dataclasses import replace
    from edgelstm.costmodel.api import load_target, predict
    from edgelstm.spec import LSTMSpec
    t = replace(load_target("cortex-a72"), parallel_step_overhead_s=5e-6)
    assert t.kind == "cpu" and t.cores == 4
    spec = LSTMSpec(H, H)
    one = predict(spec, t, batch=B, seq_len=50, threads=1)
    all_ = predict(spec, t, batch=B, seq_len=50, threads=4)
    assert all_.latency_s <= one.latency_s * (1 + 1e-12)
