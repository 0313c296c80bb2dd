"""The `edgelstm` command: size, targets, calibrate, bench, explore.

Bad input gets one line on stderr and exit code 2, never a traceback.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time

from .spec import LSTMSpec, SpecError

EXIT_USAGE = 2


class UsageError(Exception):
    """Bad input from the command line: reported as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse prints usage and several lines; we print one
        raise UsageError(f"{self.prog}: {message}")


# -- formatting --------------------------------------------------------------------------
def _finite(v):
    """JSON has no Infinity or NaN: a float figure that overflowed (absurd sizes) is null."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite(x) for x in v]
    return v


def dumps(obj, **kw) -> str:
    """json.dumps that never writes Infinity or NaN (they become null)."""
    return json.dumps(_finite(obj), allow_nan=False, **kw)


def human(n: float, unit: str = "") -> str:
    """1234567 -> '1.23 M'. Exact integers are in --json; tables are for reading."""
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= factor:
            return f"{n / factor:.3g} {prefix}{unit}"
    return f"{n:.4g} {unit}".rstrip() if isinstance(n, float) else f"{n} {unit}".rstrip()


def table(headers, rows) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    out = [line(cells[0]), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells[1:]]
    return "\n".join(out)


# -- size --------------------------------------------------------------------------------
def _add_spec_fields(g):
    """The LSTMSpec fields as flags (kebab-case), for `size` and `explore`."""
    g.add_argument("--input-size", type=int)
    g.add_argument("--hidden-size", type=int)
    g.add_argument("--num-layers", type=int, default=1)
    g.add_argument("--bidirectional", action="store_true")
    g.add_argument("--proj-size", type=int, default=0)
    g.add_argument("--bias", default="pytorch", help="pytorch (two bias vectors), keras (one), none")
    g.add_argument("--peephole", action="store_true")


def _add_size(sub):
    p = sub.add_parser("size", help="parameters, memory, MACs, FLOPs and bytes per step of an LSTM")
    _add_spec_fields(p.add_argument_group("the LSTM (LSTMSpec fields)"))
    p.add_argument("--example", help="a worked example of the seed articles instead of sizes "
                                      "(demystify, keras-640, kws, sentiment, seq2seq, sample2, sample3)")
    p.add_argument("--model", metavar="FILE", help="a model file instead of sizes: .onnx, .keras, "
                                                    "Keras model .json, .tflite")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--seq-len", type=int, default=1)
    p.add_argument("--dtype", default="float32",
                   help="float64, float32, float16, bfloat16, int8, int4 (weight storage)")
    p.add_argument("--convention", default="edgelstm", help="edgelstm, thop, ptflops, torchinfo")
    p.add_argument("--target", action="append", default=[], metavar="NAME",
                   help="add predictions for a target: a catalog name (edgelstm targets), host, "
                        "or a .toml path (repeatable)")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(func=cmd_size)


def spec_from_args(args):
    if getattr(args, "model", None):
        if args.example or args.input_size is not None or args.hidden_size is not None:
            raise UsageError("size: give one of --model, --example or --input-size/--hidden-size")
        from .importers import load_model
        return load_model(args.model).spec      # ModelFileError (a ValueError): one line, exit 2
    if args.example:
        from .examples import get_example
        if args.input_size is not None or args.hidden_size is not None:
            raise UsageError("size: give either --example or --input-size/--hidden-size, not both")
        try:
            return get_example(args.example).spec
        except KeyError as e:
            raise UsageError(f"size: --{e.args[0]}") from None
    if args.input_size is None or args.hidden_size is None:
        raise UsageError("size: expected --input-size and --hidden-size (or --example NAME)")
    return LSTMSpec(input_size=args.input_size, hidden_size=args.hidden_size, num_layers=args.num_layers,
                    bidirectional=args.bidirectional, proj_size=args.proj_size, bias=args.bias,
                    peephole=args.peephole)


def size_report(c) -> str:
    rows = [(l.name + (f" (x{l.repeat:,})" if l.repeat > 1 else ""), l.input_size, l.hidden_size or "", l.out_size, f"{l.params_total:,}",
             human(l.weight_bytes, "B"), human(l.macs_per_step), human(l.flops_per_step))
            for l in c.layers]
    rows.append(("total", "", "", "", f"{c.params:,}", human(c.weight_bytes, "B"),
                 human(c.macs_per_step), human(c.flops_per_step)))
    out = [f"{c.spec}", f"batch {c.batch}, seq_len {c.seq_len}, dtype {c.dtype}, convention {c.convention}", "",
           table(("layer", "in", "hidden", "out", "params", "weights", "MACs/step", "FLOPs/step"), rows), ""]
    out.append("weight memory: " + ", ".join(f"{k} {human(v, 'B')}" for k, v in c.weight_bytes_by_dtype.items())
               + (f" (int8/int4 include {human(c.scale_bytes, 'B')} of per-channel scales)" if c.scale_bytes else ""))
    out.append(f"state (h, c): {human(c.state_bytes, 'B')}; training keeps {human(c.training_activation_bytes_per_step, 'B')} per step")
    out.append(f"transcendentals per step: {c.transcendentals_per_step:,} (apart from FLOPs)")
    out.append("")
    out.append(table(("weights", "bytes/step", "FLOP/byte", "bytes/sequence"),
                     [(t.case, human(t.bytes_per_step, "B"), f"{t.flops_per_byte:.3g}", human(t.bytes_per_sequence, "B"))
                      for t in c.traffic.values()]))
    out.append("")
    out.append(f"per sequence: {human(c.macs_per_sequence)}MACs, {human(c.flops_per_sequence)}FLOPs; "
               f"training (forward + backward) {human(c.training_macs_per_sequence)}MACs")
    return "\n".join(out)


def _tflite_int8_counts(args):
    """For `size --model m.tflite`: take batch, seq_len and dtype from the file (unless given), and the
    integer operations of TFLM's int8 kernel when the LSTM is int8. -> Int8LSTMCounts or None."""
    if not str(getattr(args, "model", "") or "").lower().endswith(".tflite"):
        return None
    from .costmodel.counts import count_int8_lstm
    from .importers import load_model
    m = load_model(args.model)
    if args.batch == 1 and args.seq_len == 1:
        args.batch, args.seq_len = m.batch, m.seq_len
    if not any(hasattr(layer, "w_x") for layer in m.lstms):
        return None
    if args.dtype == "float32":
        args.dtype = "int8"
    return count_int8_lstm(m.spec, batch=args.batch, seq_len=args.seq_len)


def int8_report(n) -> str:
    return (f"int8 kernel (TFLM's integer LSTM) per sequence: {n.macs:,} MACs, {n.requantizations:,} "
            f"requantizations, {n.lut_lookups:,} table look-ups, {n.saturating_adds:,} saturating adds; "
            f"RAM: state {n.state_bytes:,} B, scratch {n.scratch_bytes:,} B, input and output sequences "
            f"{n.io_bytes:,} B")


def cmd_size(args) -> int:
    from .costmodel.counts import count
    spec = spec_from_args(args)
    int8 = _tflite_int8_counts(args)
    c = count(spec, batch=args.batch, seq_len=args.seq_len, dtype=args.dtype, convention=args.convention)
    preds = []
    if args.target:
        from .costmodel.api import predict
        preds = [predict(spec, t, batch=args.batch, seq_len=args.seq_len, dtype=args.dtype) for t in args.target]
    if args.json:
        d = c.to_dict()
        if args.target:
            d["predictions"] = [p.to_dict() for p in preds]
        if int8 is not None:
            d["int8_ops"] = dataclasses.asdict(int8)
        print(dumps(d, indent=2))
    else:
        print(size_report(c))
        if int8 is not None:
            print(int8_report(int8))
        if preds:
            print("\n" + predictions_report(preds))
    return 0


def small(x: float, unit: str) -> str:
    """0.00123 -> '1.23 m<unit>': seconds and joules below one."""
    for factor, prefix in ((1, ""), (1e-3, "m"), (1e-6, "µ"), (1e-9, "n"), (1e-12, "p")):
        if abs(x) >= factor:
            return f"{x / factor:.3g} {prefix}{unit}"
    return f"{x:.3g} {unit}"


def predictions_report(preds) -> str:
    rows = [(p.target, small(p.latency_s, "s"), small(p.step_latency_s, "s"), human(p.max_step_rate_hz, "Hz"),
             p.bound, small(p.energy_j, "J"), p.weights_level, "yes" if p.fits else "NO") for p in preds]
    out = [table(("target", "latency", "step", "max rate", "bound", "energy", "weights in", "fits"), rows)]
    out += [f"{p.target}: {n}" for p in preds for n in p.notes]
    return "\n".join(out)


# -- targets -----------------------------------------------------------------------------
def _add_targets(sub):
    p = sub.add_parser("targets", help="the hardware target catalog")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(func=cmd_targets)


def cmd_targets(args) -> int:
    from .costmodel.target import TargetError, host_target_path, list_targets, load_target
    rows, items = [], []
    for name in list_targets():
        if name == "host":
            path = host_target_path()
            if not path.exists():
                rows.append(("host", "this machine", "", "", "", f"not calibrated yet ({path})"))
                items.append({"name": "host", "path": str(path), "calibrated": False})
                continue
            try:
                t = load_target(path)
            except TargetError as e:   # an unreadable or older host file: listed, not fatal
                rows.append(("host", "this machine", "", "", "", f"unusable: {e}"))
                items.append({"name": "host", "path": str(path), "calibrated": False, "error": str(e)})
                continue
        else:
            t = load_target(name)
        peak = max(t.peak_macs_per_s(dt, t.cores) for dt in t.macs_per_cycle)
        rows.append((name, t.kind, f"{t.clock_MHz:g} MHz", ", ".join(sorted(t.macs_per_cycle)),
                     human(2 * peak, "FLOP/s"), " / ".join(f"{m.name} {human(m.capacity_bytes, 'B')}" for m in t.memory)))
        items.append(dict(t.to_dict(), name=name, calibrated=True))
    if args.json:
        print(dumps({"targets": items}, indent=2, default=str))
    else:
        print(table(("target", "kind", "clock", "dtypes", "peak", "memory"), rows))
    return 0


# -- calibrate ---------------------------------------------------------------------------
def _add_calibrate(sub):
    p = sub.add_parser("calibrate", help="measure this machine and write the host target file")
    p.add_argument("--quick", action="store_true", help="fewer points and repetitions: a few seconds once "
                                                         "compiled (a first run also compiles the micro-benchmarks)")
    p.add_argument("--out", metavar="PATH", help="where to write (default $EDGELSTM_HOST_TARGET or "
                                                  "~/.cache/edgelstm/host.toml)")
    p.add_argument("--json", action="store_true", help="print the written target as JSON")
    p.set_defaults(func=cmd_calibrate)


def cmd_calibrate(args) -> int:
    from ._files import check_writable
    from .costmodel.host.calibrate import calibrate
    from .costmodel.target import host_target_path, load_target_file
    # Checked before a minute of measuring, not when the file is written.
    check_writable(args.out or host_target_path(), "host target file", error=UsageError)
    path = calibrate(quick=args.quick, out=args.out, progress=not args.json)
    t = load_target_file(path)
    if args.json:
        print(dumps(dict(t.to_dict(), calibration=t.calibration), indent=2, default=str))
        return 0
    cal = t.calibration
    print(f"wrote {path} ({cal.get('cpu_model')}, {cal.get('duration_s')} s)")
    print(table(("figure", "1 thread", f"{t.cores} threads"),
                [(f"peak {dt}", human(cal.get(f"peak_GFLOP_per_s_{dt}_1thread", 0) * 1e9, "FLOP/s"),
                  human(cal.get(f"peak_GFLOP_per_s_{dt}_{t.cores}thread", 0) * 1e9, "FLOP/s"))
                 for dt in ("float32", "float64")]
                + [(f"read {m.name} ({human(m.capacity_bytes, 'B')})", human(m.bandwidth_1thread_GB_per_s * 1e9, "B/s"),
                    human(m.bandwidth_GB_per_s * 1e9, "B/s")) for m in t.memory]))
    print(f"call {human(t.call_overhead_s, 's')}, step {human(t.step_overhead_s, 's')}, "
          f"parallel step {human(t.parallel_step_overhead_s, 's')}, "
          f"sigmoid/tanh {t.transcendental_ns.get('float32', 0):.3g} ns")
    return 0


# -- bench -------------------------------------------------------------------------------
def _add_bench(sub):
    p = sub.add_parser("bench", help="run the CPU kernels over a sweep and compare with the host prediction")
    p.add_argument("--quick", action="store_true", help="a small grid that finishes in under a minute")
    p.add_argument("--spec", action="append", default=[],
                   help="a configuration, e.g. hidden_size=128,batch=1|8,seq_len=100,dtype=float32 "
                        "(| gives several values; repeatable)")
    p.add_argument("--grid", help="a JSON or TOML file with 'configs' and/or 'axes'")
    p.add_argument("--max-configs", type=int, default=None,
                   help="refuse a grid larger than this (default $EDGELSTM_MAX_CONFIGS or 10000)")
    p.add_argument("--out", default="bench-results", help="directory for results.json, results.md and plots")
    p.add_argument("--threads", type=int, default=None, help="Numba threads (default: all cores)")
    p.add_argument("--min-time", type=float, default=None, help="seconds of repeats per configuration")
    p.add_argument("--calibrate", nargs="?", const="quick", choices=("quick", "full"), default=None,
                   help="calibrate this machine first (quick: about 15-20 s the first time, a few seconds once compiled; full: a few minutes) into "
                        "OUT/host.toml and predict with that file, so the model and the timings see "
                        "the machine in the same state (on a shared machine it drifts); the host "
                        "file in your cache is left as it is")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--json", action="store_true", help="print the results JSON on stdout")
    p.set_defaults(func=cmd_bench)


def _check_bench_outputs(args) -> None:
    """Everything bench will write, checked before the sweep (minutes) rather than after:
    the --out directory, and the host target file when a first run calibrates into it."""
    from ._files import check_writable
    from .costmodel.target import HOST_ENV, host_target_path
    check_writable(args.out, "bench --out directory", error=UsageError, is_dir=True)
    if not args.calibrate:
        host = host_target_path()
        if not host.exists():
            check_writable(host, f"host target file (${HOST_ENV} or the default)", error=UsageError)


def cmd_bench(args) -> int:
    import os
    from . import sweep
    if args.threads is not None and not 1 <= args.threads <= (os.cpu_count() or 1):
        raise UsageError(f"bench: --threads: expected 1..{os.cpu_count()}, got {args.threads}")
    if args.min_time is not None and not args.min_time > 0:
        raise UsageError(f"bench: --min-time: expected a positive number of seconds, got {args.min_time}")
    configs = []
    for text in args.spec:
        configs += sweep.parse_spec_string(text, args.max_configs)
    if args.grid:
        configs += sweep.load_grid(args.grid, args.max_configs)
    if not configs:
        configs = sweep.default_grid(quick=args.quick)
    sweep.check_sizes(configs)
    _check_bench_outputs(args)
    plots = not args.no_plots
    if plots:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise UsageError("bench: plots need matplotlib: pip install 'edgelstm[plot]', or pass --no-plots") from None
    import numba
    from .costmodel.api import load_target
    threads = args.threads or numba.config.NUMBA_NUM_THREADS
    numba.set_num_threads(threads)
    if args.calibrate:
        from pathlib import Path
        from .costmodel.host.calibrate import calibrate_apart
        out = Path(args.out) / "host.toml"
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(f"bench: --out {args.out}: cannot create it ({e.strerror})") from None
        print(f"calibrating this machine ({args.calibrate}) into {out} first", file=sys.stderr)
        from .costmodel.host.profile import load_host_file
        # in a child process: the timings below then run in a process without calibration's threads
        target = load_host_file(calibrate_apart(quick=args.calibrate == "quick", out=out, progress=True))
    else:
        target = load_target("host")
    min_time = args.min_time if args.min_time is not None else (0.1 if args.quick else 0.5)
    t0 = time.perf_counter()
    results = sweep.run(configs, target, threads, min_time_s=min_time)
    machine = sweep.machine_info(threads, target)
    paths = sweep.write_reports(results, machine, args.out, target=target, plots=plots)
    if args.json:
        print(dumps(sweep.to_json(results, machine), indent=2))
    else:
        print(sweep.to_markdown(results, machine))
        print("wrote " + ", ".join(str(p) for p in paths) + f" in {time.perf_counter() - t0:.0f} s")
    print(sweep.summary_line(sweep.summarize(results)), file=sys.stderr if args.json else sys.stdout)
    return 0


# -- explore -------------------------------------------------------------------------------
def _add_explore(sub):
    p = sub.add_parser("explore", help="sweep systolic-array accelerator designs for an LSTM: "
                                       "Pareto front, CSV/JSON and plots (docs/design-study.md)")
    p.add_argument("--grid", required=True, metavar="FILE",
                   help="TOML grid: a list of values per design key, optional [budget] table")
    _add_spec_fields(p.add_argument_group("the LSTM (LSTMSpec fields), or --model / --example as in `size`"))
    p.add_argument("--model", metavar="FILE")
    p.add_argument("--example")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--seq-len", type=int, default=1)
    p.add_argument("--dtype", default="int8", help="int8, int4, float16, bfloat16, float32")
    b = p.add_argument_group("budget (overrides the grid file's [budget])")
    b.add_argument("--rate-hz", type=float, help="steps per second: the step deadline and the power's duty cycle")
    b.add_argument("--step-deadline-s", type=float)
    b.add_argument("--power-w", type=float)
    b.add_argument("--area-mm2", type=float)
    p.add_argument("--objectives", default="step_latency_s,step_energy_j,area_mm2",
                   help="comma-separated result keys for the Pareto front")
    p.add_argument("--out", default="explore-results", metavar="DIR")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--json", action="store_true", help="the summary as one JSON object on stdout")
    p.set_defaults(func=cmd_explore)


def cmd_explore(args) -> int:
    from pathlib import Path
    from . import explore as ex
    try:
        spec = spec_from_args(args)
    except UsageError as e:
        raise UsageError(str(e).replace("size:", "explore:", 1)) from None
    objectives = tuple(o.strip() for o in args.objectives.split(",") if o.strip())
    bad = [o for o in objectives if o not in ex.OBJECTIVES]
    if bad or not objectives:
        raise UsageError(f"explore: --objectives: expected comma-separated keys among {', '.join(ex.OBJECTIVES)}, "
                         f"got {args.objectives!r}")
    values, budget = ex.load_grid(args.grid)
    for k in ex.BUDGET_KEYS:
        if getattr(args, k) is not None:
            budget[k] = getattr(args, k)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    designs = ex.grid(**values)
    n = len(designs["rows"])
    t0 = time.perf_counter()
    shown = [False]

    def progress(done, total):  # a bar on stderr once the sweep has taken more than a second
        if time.perf_counter() - t0 > 1.0 or shown[0]:
            shown[0] = True
            bar = "#" * int(30 * done / total)
            print(f"\rexplore: [{bar:<30}] {done:,}/{total:,} designs", end="", file=sys.stderr, flush=True)

    result = ex.sweep_chunked(spec, designs, batch=args.batch, seq_len=args.seq_len, dtype=args.dtype,
                              progress=progress)
    if shown[0]:
        print(file=sys.stderr)
    elapsed = time.perf_counter() - t0
    ok = ex.constraints(result, **budget)
    front = ex.pareto(result, objectives=objectives, where=ok)
    ex.write_csv(out / "front.csv", designs, result, front)
    written = [out / "front.csv"]
    if n <= ex.CSV_ALL_MAX:
        ex.write_csv(out / "designs.csv", designs, result, range(n))
        written.append(out / "designs.csv")
    summary = {"spec": str(spec), "batch": args.batch, "seq_len": args.seq_len, "dtype": args.dtype,
               "grid": values, "budget": budget, "objectives": list(objectives), "designs": n,
               "within_budget": int(ok.sum()), "sweep_s": elapsed, "designs_per_s": n / elapsed,
               "front": list(ex._rows(designs, result, front))}
    (out / "explore.json").write_text(dumps(summary, indent=2))
    written.append(out / "explore.json")
    if not args.no_plots:
        try:
            written += ex.plot_study(out, designs, result, ok, front, objectives,
                                     title=f"E={getattr(spec, 'input_size', '')} H={getattr(spec, 'hidden_size', '')} {args.dtype}, {n:,} designs")
        except ImportError:
            print("explore: matplotlib is not installed (pip install 'edgelstm[plot]'): no plots", file=sys.stderr)
    if args.json:
        print(dumps(summary, indent=2))
        return 0
    print(f"{spec}: {n:,} designs in {elapsed:.2f} s ({n / elapsed / 1e6:.2f} M/s); "
          f"{int(ok.sum()):,} within budget {budget or '(none)'}; Pareto front over {', '.join(objectives)}:")
    rows = [(f"{r['rows']}x{r['cols']} {r['dataflow']}", f"{r['ifmap_sram_kB']:g}/{r['filter_sram_kB']:g}/{r['ofmap_sram_kB']:g}",
             f"{r['dram_words_per_cycle']:g}", f"{r['clock_MHz']:g}", small(r["step_latency_s"], "s"),
             small(r["step_energy_j"], "J"), f"{r['area_mm2']:.3g}", f"{r['utilization']:.1%}")
            for r in summary["front"][:20]]
    print(table(("array", "SRAM KiB i/f/o", "DRAM w/c", "MHz", "step", "step energy", "mm2", "util"), rows))
    if len(summary["front"]) > 20:
        print(f"... {len(summary['front']) - 20} more in {out / 'front.csv'}")
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


# -- entry point ---------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="edgelstm", description="What an LSTM costs on real hardware, and how fast it runs.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_size(sub)
    _add_targets(sub)
    _add_calibrate(sub)
    _add_bench(sub)
    _add_explore(sub)
    return parser


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
    except BrokenPipeError:  # `edgelstm size ... | head`: the reader left; say nothing
        sys.stderr.close()
        return 0
    except (SpecError, ValueError, KeyError, OSError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        if isinstance(e, OSError) and not str(e).startswith(("/", "error")) and e.filename:
            msg = f"{e.filename}: {e.strerror or e}"
        print(f"error: {' '.join(str(msg).split())}", file=sys.stderr)
    except OverflowError as e:   # sizes whose figures exceed a float (10**154 units and up)
        print(f"error: the sizes given are too large for the cost model's floating-point figures ({e})",
              file=sys.stderr)
    except RecursionError:
        print("error: input nested too deeply", file=sys.stderr)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
    return EXIT_USAGE
