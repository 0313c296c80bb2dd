"""The generic cost model against published LSTM latencies: the table of docs/validation.md.

The measurements live in docs/validation.toml (one [[row]] each, with its source); this
module is their one reader. It predicts each row with `edgelstm.predict` on the row's
catalog target and renders the Markdown between the markers in docs/validation.md.

Run: python examples/validation_table.py            (prints the generated block)
     python examples/validation_table.py --write    (rewrites it in docs/validation.md)
     python examples/validation_table.py --check    (exit 1 if docs/validation.md is stale)
"""
from __future__ import annotations

import math
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import edgelstm as el

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the tomli backport, a core dependency there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "docs" / "validation.toml"
DOC = ROOT / "docs" / "validation.md"
BEGIN, END = "<!-- validation-table:begin -->", "<!-- validation-table:end -->"
CLASSES = ("gpu", "phone", "cortex-a", "mcu")
_REQUIRED = {"id": str, "class": str, "device": str, "target": str, "runtime": str, "spec": dict,
             "batch": int, "seq_len": int, "dtype": str, "measured_s": float, "source": str,
             "url": str, "where": str, "setup": str}
_OPTIONAL = {"threads": int, "published_params": int, "published_params_precision": int,
             "head_params": int}


class ValidationDataError(ValueError):
    """A malformed row of docs/validation.toml; names the row and the key."""


@dataclass(frozen=True)
class Row:
    id: str
    device_class: str
    device: str
    target: str
    runtime: str
    spec: el.LSTMSpec
    batch: int
    seq_len: int
    dtype: str
    measured_s: float
    source: str
    url: str
    where: str
    setup: str
    threads: Optional[int] = None
    published_params: Optional[int] = None
    published_params_precision: int = 1
    head_params: int = 0

    def predict(self) -> el.Prediction:
        kw = {} if self.threads is None else {"threads": self.threads}
        return el.predict(self.spec, self.target, batch=self.batch, seq_len=self.seq_len,
                          dtype=self.dtype, **kw)


def _check(fname: str, i: int, raw: dict) -> None:
    name = raw.get("id", f"row[{i}]")
    for key, typ in {**_REQUIRED, **_OPTIONAL}.items():
        if key not in raw:
            if key in _REQUIRED:
                raise ValidationDataError(f"{fname}: {name}: {key}: missing")
            continue
        v = raw[key]
        ok = isinstance(v, (int, float)) if typ is float else isinstance(v, typ)
        if not ok or isinstance(v, bool) or (typ in (int, float) and v <= 0) or (typ is str and not v):
            raise ValidationDataError(f"{fname}: {name}: {key}: expected a non-empty "
                                      f"{'positive ' if typ in (int, float) else ''}{typ.__name__}, got {v!r}")
    unknown = set(raw) - set(_REQUIRED) - set(_OPTIONAL)
    if unknown:
        raise ValidationDataError(f"{fname}: {name}: unknown keys {', '.join(sorted(unknown))}")
    if raw["class"] not in CLASSES:
        raise ValidationDataError(f"{fname}: {name}: class: expected one of {', '.join(CLASSES)}, "
                                  f"got {raw['class']!r}")


def load_rows(path: Path = DATA) -> List[Row]:
    """The rows of docs/validation.toml, checked: every key present and typed, ids unique."""
    data = tomllib.loads(Path(path).read_text())
    rows, seen = [], set()
    for i, raw in enumerate(data.get("row", [])):
        _check(Path(path).name, i, raw)
        if raw["id"] in seen:
            raise ValidationDataError(f"{Path(path).name}: {raw['id']}: id: used twice")
        seen.add(raw["id"])
        try:
            spec = el.LSTMSpec(**raw["spec"])
        except (TypeError, ValueError) as e:
            raise ValidationDataError(f"{Path(path).name}: {raw['id']}: spec: {e}") from None
        rows.append(Row(id=raw["id"], device_class=raw["class"], device=raw["device"], target=raw["target"],
                        runtime=raw["runtime"], spec=spec, batch=raw["batch"],
                        seq_len=raw["seq_len"], dtype=raw["dtype"], measured_s=float(raw["measured_s"]),
                        source=raw["source"], url=raw["url"], where=raw["where"], setup=raw["setup"],
                        threads=raw.get("threads"), published_params=raw.get("published_params"),
                        published_params_precision=raw.get("published_params_precision", 1),
                        head_params=raw.get("head_params", 0)))
    return rows


# -- rendering -----------------------------------------------------------------------------
def fmt_s(s: float) -> str:
    """A time with 4 significant figures in the unit that suits it."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if s >= scale:
            return f"{s / scale:.4g} {unit}"
    return f"{s / 1e-9:.4g} ns"


def _model(r: Row) -> str:
    s = r.spec
    parts = [f"E={s.input_size}", f"H={s.hidden_size}"]
    if s.proj_size:
        parts.append(f"P={s.proj_size}")
    parts += [f"L={s.num_layers}", "bi" if s.bidirectional else "uni", f"T={r.seq_len}", f"B={r.batch}", r.dtype]
    if s.peephole:
        parts.append("peephole")
    return ", ".join(parts)


def _per_step(p: el.Prediction) -> str:
    """What the model charges per time step, summed over layers: the terms that matter."""
    T = p.seq_len
    b = p.breakdown
    terms = [("overhead", b["step_overhead"] / T),
             (f"weights ({p.weights_level})", b["weight_memory"] / T),
             ("compute", b["recurrent_compute"] / T),
             ("epilogue", b["epilogue"] / T)]
    step = " + ".join(f"{name} {fmt_s(v)}" for name, v in terms if v > 0)
    once = b["call_overhead"] + b["input_gemm"]
    return f"{step}; once: {fmt_s(once)}"


def table(rows: List[Row], preds: Dict[str, el.Prediction]) -> str:
    out = ["| # | class | device | runtime | model | source | measured | predicted | predicted / measured | model's bound |",
           "| ---: | --- | --- | --- | --- | --- | ---: | ---: | ---: | --- |"]
    for i, r in enumerate(rows, 1):
        p = preds[r.id]
        out.append(f"| {i} | {r.device_class} | {r.device} | {r.runtime} | {_model(r)} | "
                   f"[{r.source}]({r.url}) | {fmt_s(r.measured_s)} | {fmt_s(p.latency_s)} | "
                   f"{p.latency_s / r.measured_s:.3g} | {p.bound} |")
    return "\n".join(out)


def details(rows: List[Row], preds: Dict[str, el.Prediction]) -> str:
    out = []
    for i, r in enumerate(rows, 1):
        p = preds[r.id]
        out.append(f"{i}. `{r.id}`, target `{r.target}`{f', threads={r.threads}' if r.threads else ''}. "
                   f"Where: {r.where}. Setup: {r.setup} "
                   f"Model per step: {_per_step(p)}.")
    return "\n".join(out)


def summary(rows: List[Row], preds: Dict[str, el.Prediction]) -> str:
    ratios = {r.id: preds[r.id].latency_s / r.measured_s for r in rows}

    def line(name, rs):
        gm = math.exp(statistics.fmean(math.log(x) for x in rs))
        return (f"| {name} | {len(rs)} | {statistics.median(rs):.3g} | {gm:.3g} | {min(rs):.3g} – {max(rs):.3g} | "
                f"{sum(0.75 <= x <= 1.25 for x in rs)} | {sum(0.5 <= x <= 2 for x in rs)} |")

    out = ["| rows | n | median ratio | geometric mean | range | within ±25% | within 2x |",
           "| --- | ---: | ---: | ---: | --- | ---: | ---: |",
           line("all", list(ratios.values()))]
    for c in CLASSES:
        rs = [ratios[r.id] for r in rows if r.device_class == c]
        if rs:
            out.append(line(c, rs))
    return "\n".join(out)


def block(rows: Optional[List[Row]] = None) -> str:
    """The generated part of docs/validation.md, markers included."""
    rows = load_rows() if rows is None else rows
    preds = {r.id: r.predict() for r in rows}
    return "\n\n".join([BEGIN, table(rows, preds), "Summary of predicted / measured:", summary(rows, preds),
                        "Per row: where the figure is, how the setup maps onto the spec, and what the "
                        "model charges per step (summed over layers) and once per sequence.",
                        details(rows, preds), END])


def replace_block(doc_text: str, new_block: str) -> str:
    start, stop = doc_text.find(BEGIN), doc_text.find(END)
    if start < 0 or stop < start:
        raise ValidationDataError(f"{DOC.name}: expected the markers {BEGIN} ... {END}")
    return doc_text[:start] + new_block + doc_text[stop + len(END):]


def main(argv: List[str]) -> int:
    new = block()
    if "--write" in argv:
        DOC.write_text(replace_block(DOC.read_text(), new))
        print(f"wrote {DOC}")
    elif "--check" in argv:
        if replace_block(DOC.read_text(), new) != DOC.read_text():
            print(f"{DOC} is stale: run python examples/validation_table.py --write", file=sys.stderr)
            return 1
    else:
        print(new)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
