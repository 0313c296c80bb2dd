"""Design-sweep throughput of the vectorized counter (count_grid).

Target (issue 2): at least 1,000,000 configurations per second on this machine.
Run: python -m pytest bench/bench_counts.py --benchmark-only
"""
import numpy as np

from edgelstm.costmodel.counts import count_grid

N = 1_000_000


def _grid():
    rng = np.random.default_rng(0)
    H = rng.integers(8, 2048, N)
    return dict(input_size=rng.integers(1, 1024, N), hidden_size=H, num_layers=rng.integers(1, 5, N),
                bidirectional=rng.integers(0, 2, N).astype(bool), proj_size=(H // 2) * rng.integers(0, 2, N))


def test_count_grid_million_configs(benchmark):
    grid = _grid()                      # inputs built outside the timed region
    out = benchmark(count_grid, **grid, dtype="int8")
    assert out["params"].shape == (N,)
    median_s = benchmark.stats.stats.median
    benchmark.extra_info.update(configs=N, configs_per_s=N / median_s, target_configs_per_s=1_000_000)
    print(f"\ncount_grid: {N / median_s / 1e6:.2f} M configurations/s (median {median_s * 1e3:.1f} ms)")
