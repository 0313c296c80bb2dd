"""Run SCALE-Sim 3.0.0 on a batch of GEMMs and print the reported cycles as JSON.

This script runs in its own virtual environment (``scalesim==3.0.0`` with
``numpy<2.4``), never in edgelstm's: SCALE-Sim 3.0.0 calls ``int()`` on
one-element arrays, which numpy >= 2.4 rejects. It imports nothing from
edgelstm. tests/test_scalesim.py starts it once per session as

    <venv>/bin/python scalesim_runner.py --serve

and writes one job per line (JSON) to its stdin, reading one result per line back;
without --serve it reads a JSON list of jobs on stdin and prints a list of results.

Each job is a dict: M, N, K (A[M x K] @ B[K x N]), rows, cols, dataflow
(os|ws|is), ifmap_kB, filter_kB, ofmap_kB and, optionally, bandwidth
(words per cycle for the DRAM side of all three buffers; absent: SCALE-Sim's
CALC mode, which sizes bandwidth so that nothing stalls). The result per job
is the COMPUTE_REPORT.csv row: total_cycles_incl_prefetch, total_cycles,
stall_cycles.
"""

import csv
import io
import json
import os
import sys
import tempfile
from contextlib import redirect_stdout

CONFIG = """\
[general]
run_name = {run_name}

[run_presets]
InterfaceBandwidth = {bw_mode}
UseRamulatorTrace = False

[architecture_presets]
ArrayHeight = {rows}
ArrayWidth = {cols}
IfmapSramSzkB = {ifmap_kB}
FilterSramSzkB = {filter_kB}
OfmapSramSzkB = {ofmap_kB}
IfmapOffset = 0
FilterOffset = 10000000
OfmapOffset = 20000000
Dataflow = {dataflow}
ReadRequestBuffer = 32
WriteRequestBuffer = 32
Bandwidth = {bandwidth}

[layout]
IfmapCustomLayout = False
IfmapSRAMBankBandwidth = {bandwidth}
IfmapSRAMBankNum = 1
IfmapSRAMBankPort = 2
FilterCustomLayout = False
FilterSRAMBankBandwidth = {bandwidth}
FilterSRAMBankNum = 1
FilterSRAMBankPort = 2

[sparsity]
SparsitySupport = false
"""

# SCALE-Sim opens a layout file even when no custom layout is used.
LAYOUT = "Layer, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, Num Filter,\n"


def run_one(job, workdir, index):
    from scalesim.scale_sim import scalesim

    run_name = f"job{index}"
    bandwidth = job.get("bandwidth")
    config_path = os.path.join(workdir, f"{run_name}.cfg")
    topo_path = os.path.join(workdir, f"{run_name}_topo.csv")
    layout_path = os.path.join(workdir, f"{run_name}_layout.csv")
    with open(config_path, "w") as f:
        f.write(CONFIG.format(
            run_name=run_name,
            bw_mode="CALC" if bandwidth is None else "USER",
            bandwidth=10 if bandwidth is None else int(bandwidth),
            rows=int(job["rows"]), cols=int(job["cols"]),
            ifmap_kB=int(job["ifmap_kB"]), filter_kB=int(job["filter_kB"]),
            ofmap_kB=int(job["ofmap_kB"]), dataflow=job["dataflow"]))
    with open(topo_path, "w") as f:
        # Every row ends with a comma: the parser drops the last field.
        f.write("Layer, M, N, K,\n")
        f.write(f"gemm, {int(job['M'])}, {int(job['N'])}, {int(job['K'])},\n")
    with open(layout_path, "w") as f:
        f.write(LAYOUT)
        f.write("gemm, 1, 1, 1, 1, 1, 1,\n")

    sim = scalesim(save_disk_space=True, verbose=False, config=config_path,
                   topology=topo_path, layout=layout_path, input_type_gemm=True)
    with redirect_stdout(io.StringIO()):
        sim.run_scale(top_path=workdir)
    report = os.path.join(workdir, run_name, "COMPUTE_REPORT.csv")
    with open(report) as f:
        rows = list(csv.reader(f))
    values = [v.strip() for v in rows[1]]
    return {
        "total_cycles_incl_prefetch": int(float(values[1])),
        "total_cycles": int(float(values[2])),
        "stall_cycles": int(float(values[3])),
    }


def main():
    with tempfile.TemporaryDirectory(prefix="edgelstm-scalesim-") as workdir:
        if "--serve" in sys.argv[1:]:
            for i, line in enumerate(sys.stdin):
                if line.strip():
                    print(json.dumps(run_one(json.loads(line), workdir, i)), flush=True)
            return
        jobs = json.load(sys.stdin)
        json.dump([run_one(job, workdir, i) for i, job in enumerate(jobs)], sys.stdout)


if __name__ == "__main__":
    main()
