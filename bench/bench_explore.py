"""Design-sweep throughput of the array model (edgelstm.explore.sweep).

Target (issue 15): at least 1,000,000 accelerator designs per second on this machine,
vectorized NumPy with no Python loop per design. For scale, `predict` on the edge-npu
target (the same model, one design per call) is timed in the same process.
Run: python -m pytest bench/bench_explore.py --benchmark-only
"""
import time

import numpy as np

import edgelstm as el
from edgelstm import explore

N = 1_000_000
SPEC = el.LSTMSpec(input_size=40, hidden_size=64)   # a keyword-spotting LSTM (docs/design-study.md)


def _designs(n=N):
    rng = np.random.default_rng(0)
    return {"rows": rng.choice([4, 8, 16, 32, 64, 128], n), "cols": rng.choice([4, 8, 16, 32, 64, 128], n),
            "dataflow": rng.choice(np.array(["os", "ws", "is"]), n),
            "ifmap_sram_kB": rng.choice([1, 2, 4, 8], n), "filter_sram_kB": rng.choice([4, 8, 16, 32, 64, 128], n),
            "ofmap_sram_kB": rng.choice([1, 2, 4, 8], n), "dram_words_per_cycle": rng.choice([1, 2, 4, 8], n),
            "clock_MHz": rng.choice([25, 50, 100, 200, 400], n)}


def test_sweep_million_designs(benchmark):
    designs = _designs()                # inputs built outside the timed region
    out = benchmark.pedantic(explore.sweep, args=(SPEC, designs), kwargs=dict(batch=1, seq_len=100, dtype="int8"),
                             rounds=7, iterations=1, warmup_rounds=1)
    assert out["latency_s"].shape == (N,)
    median_s = benchmark.stats.stats.median
    # The same model one design per call, through predict() (interleaved medians).
    per_call = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(20):
            el.predict(SPEC, "edge-npu", batch=1, seq_len=100, dtype="int8")
        per_call.append((time.perf_counter() - t) / 20)
    predict_s = float(np.median(per_call))
    benchmark.extra_info.update(designs=N, designs_per_s=N / median_s, target_designs_per_s=1_000_000,
                                predict_per_call_s=predict_s, speedup_vs_predict=predict_s * N / median_s)
    print(f"\nexplore.sweep: {N / median_s / 1e6:.2f} M designs/s (median {median_s * 1e3:.0f} ms over {N:,}); "
          f"predict(): {predict_s * 1e3:.2f} ms per design, {predict_s * N / median_s:,.0f}x slower per design")
