"""The numbers of docs/design-study.md: python docs/design-study/study.py (about 2 s).

The plots come from the CLI:
    edgelstm explore --grid docs/design-study/kws-grid.toml --input-size 40 --hidden-size 64 \
        --dtype int8 --out docs/design-study
"""
from edgelstm.costmodel._toml import tomllib
from pathlib import Path

import numpy as np

import edgelstm as el
from edgelstm import explore
from edgelstm.costmodel.counts import count

HERE = Path(__file__).parent
SPEC = el.LSTMSpec(input_size=40, hidden_size=64)
RATE_HZ, POWER_W = 100, 1e-3

values = tomllib.loads((HERE / "kws-grid.toml").read_text())
values.pop("budget")
d = explore.grid(**values)
r = explore.sweep(SPEC, d, batch=1, seq_len=1, dtype="int8", breakdown=True)
n = len(d["rows"])
avg_w = r["step_energy_j"] * RATE_HZ + r["leakage_w"]
ok = explore.constraints(r, rate_hz=RATE_HZ, power_w=POWER_W)
c = count(SPEC, batch=1, seq_len=1, dtype="int8")
print(f"{SPEC}: {c.macs_per_step:,} MACs/step, {c.weight_bytes:,} weight bytes (int8)")
print(f"{n:,} designs, {ok.sum():,} within {RATE_HZ}/s and {POWER_W * 1e3:g} mW")


def show(label, i):
    print(f"{label}: {d['rows'][i]}x{d['cols'][i]} {d['dataflow'][i]}, SRAM i/f/o {d['ifmap_sram_kB'][i]:g}/"
          f"{d['filter_sram_kB'][i]:g}/{d['ofmap_sram_kB'][i]:g} KiB, DRAM {d['dram_words_per_cycle'][i]:g} w/c, "
          f"{d['clock_MHz'][i]:g} MHz: step {r['step_latency_s'][i] * 1e6:.1f} us, "
          f"{r['step_energy_j'][i] * 1e9:.0f} nJ/step, avg {avg_w[i] * 1e6:.0f} uW "
          f"(leak {r['leakage_w'][i] * 1e6:.0f}), {r['area_mm2'][i]:.3f} mm2, util {r['utilization'][i]:.1%}, "
          f"fits {bool(r['fits'][i])}")


idx = np.flatnonzero(ok)
show("smallest area within budget", idx[np.argmin(r["area_mm2"][idx])])
show("lowest average power within budget", idx[np.argmin(avg_w[idx])])
res = idx[r["fits"][idx]]
show("smallest area with the weights on chip", res[np.argmin(r["area_mm2"][res])])
for df in ("os", "ws", "is"):
    m = idx[(d["dataflow"][idx] == df) & r["fits"][idx]]
    show(f"  {df}: lowest average power, weights on chip", m[np.argmin(avg_w[m])])
front = explore.pareto(r, objectives=("area_mm2", "step_energy_j"), where=ok)
print(f"front over (area, step energy) within budget: {len(front)} designs")
for i in front:
    show("  front", i)

# Sanity: roofline against the array for the same designs.
pes = d["rows"] * d["cols"]
roof_cycles = c.macs_per_sequence / pes
print(f"array cycles / roofline cycles: min {np.min(r['cycles'] / roof_cycles):.2f}, "
      f"median {np.median(r['cycles'] / roof_cycles):.1f}, max {np.max(r['cycles'] / roof_cycles):.0f}")
print(f"utilization: max {r['utilization'].max():.1%}, median {np.median(r['utilization']):.2%}")
# Where the cycles of one step go, for the 16x16 ws edge-npu-like design
t = el.load_target("edge-npu")
p = el.predict(SPEC, t, batch=1, seq_len=1, dtype="int8")
print(f"edge-npu: step {p.step_latency_s * 1e6:.1f} us, breakdown (s) "
      + ", ".join(f"{k} {v * 1e6:.2f} us" for k, v in p.breakdown.items() if v) + f"; {p.notes[-1]}")
roof = el.predict(SPEC, "edge-npu", batch=1, seq_len=100, dtype="int8")
print(f"edge-npu, 100 steps: array {roof.latency_s * 1e3:.3f} ms vs roofline "
      f"{c.macs_per_sequence * 100 / (256 * 200e6) * 1e3:.4f} ms")

# Sensitivity: leakage off, and an LPDDR4-class DRAM (4 pJ/bit instead of Horowitz's DDR figure).
for label, tech in (("no leakage", {"leakage": {"logic_uW_per_um2": 0.0}}),
                    ("DRAM 32 pJ/B", {"dram": {"pJ_per_byte": 32.0}})):
    r2 = explore.sweep(SPEC, d, batch=1, seq_len=1, dtype="int8", tech=tech)
    ok2 = explore.constraints(r2, rate_hz=RATE_HZ, power_w=POWER_W)
    j = np.flatnonzero(ok2)
    i = j[np.argmin(r2["area_mm2"][j])]
    print(f"{label}: {ok2.sum():,} within budget; smallest: {d['rows'][i]}x{d['cols'][i]} {d['dataflow'][i]}, "
          f"filter {d['filter_sram_kB'][i]:g} KiB, {r2['area_mm2'][i]:.3f} mm2, "
          f"avg {(r2['step_energy_j'][i] * RATE_HZ + r2['leakage_w'][i]) * 1e6:.0f} uW")
