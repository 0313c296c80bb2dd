"""docs/validation.md: the generic cost model against published LSTM latencies on real devices.

The measured figures and their sources live in docs/validation.toml; examples/validation_table.py
is their one reader (it renders the table of docs/validation.md). PINNED holds each row's
predicted / measured ratio as the table was written: a change to the model that moves a ratio
fails here, and is then either a bug or a change to re-pin on purpose (regenerate the table with
`python examples/validation_table.py --write` and say why in the commit).
"""
import importlib.util
import sys
from pathlib import Path

import pytest

import edgelstm as el

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("validation_table", ROOT / "examples" / "validation_table.py")
vt = importlib.util.module_from_spec(_spec)
sys.modules["validation_table"] = vt  # dataclasses resolve the module by name
_spec.loader.exec_module(vt)

ROWS = vt.load_rows()

# predicted / measured, 3 significant figures, as docs/validation.md shows them.
PINNED = {
    "deepbench-1080ti-h256-b4-t150": 0.531,
    "deepbench-1080ti-h512-b1-t25": 0.391,
    "deepbench-1080ti-h1024-b1-t25": 0.529,
    "deepbench-1080ti-h2048-b1-t25": 0.623,
    "deepbench-1080ti-h1536-b4-t50": 0.581,
    "kws-pixel4-lstm-peep-nonstream": 0.583,
    "kws-pixel4-lstm-peep-stream-step": 0.333,
    "edgemark-l4r5-lstm64-float32": 0.0824,
    "edgemark-l4r5-lstm64-int8": 0.0329,
}


def test_at_least_six_rows_from_three_device_classes():
    assert len(ROWS) >= 6
    assert len({r.device_class for r in ROWS}) >= 3


def test_pins_cover_exactly_the_rows():
    assert set(PINNED) == {r.id for r in ROWS}


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_ratio_is_pinned(row):
    ratio = row.predict().latency_s / row.measured_s
    assert ratio == pytest.approx(PINNED[row.id], rel=0.01), (
        f"{row.id}: predicted/measured moved to {ratio:.3g} (pinned {PINNED[row.id]}); "
        f"if on purpose, re-pin and run examples/validation_table.py --write")


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_measured_figure_is_the_one_quoted_from_the_source(row):
    # `where` quotes the figure as the source prints it (ms or µs): a typo in measured_s shows
    quoted = {f"{round(row.measured_s * scale, 9):.10g}" for scale in (1e3, 1e6)}
    assert row.url.startswith("https://")
    assert any(q in row.where for q in quoted), (row.id, quoted, row.where)


@pytest.mark.parametrize("row", [r for r in ROWS if r.published_params], ids=lambda r: r.id)
def test_spec_matches_the_sources_parameter_count(row):
    # the spec was read from the source's model definition; its own parameter count checks it
    params = el.count(row.spec).params + row.head_params
    assert abs(params - row.published_params) < row.published_params_precision, (row.id, params)


@pytest.mark.parametrize("name", sorted({r.target for r in ROWS}))
def test_targets_are_catalog_files_with_sources(name):
    t = el.load_target(name)
    assert t.name == name and Path(t.path).parent.name == "targets"  # a catalog file
    for key in ("clock_MHz", "macs_per_cycle", "overhead"):
        assert t.sources[key]
    assert all(m.source for m in t.memory)


def test_doc_table_is_generated_from_the_data():
    doc = vt.DOC.read_text()
    assert vt.replace_block(doc, vt.block(ROWS)) == doc, "run: python examples/validation_table.py --write"


def test_a_malformed_row_is_named_with_its_key(tmp_path):
    bad = tmp_path / "v.toml"
    bad.write_text('[[row]]\nid = "x"\nclass = "gpu"\n')
    with pytest.raises(vt.ValidationDataError, match=r"x: device: missing"):
        vt.load_rows(bad)
    bad.write_text(vt.DATA.read_text().replace('class = "mcu"', 'class = "toaster"', 1))
    with pytest.raises(vt.ValidationDataError, match=r"edgemark-l4r5-lstm64-float32: class: expected one of"):
        vt.load_rows(bad)
    bad.write_text(vt.DATA.read_text().replace("hidden_size = 256", "hidden_sise = 256", 1))
    with pytest.raises(vt.ValidationDataError, match=r"deepbench-1080ti-h256-b4-t150: spec: .*hidden_sise"):
        vt.load_rows(bad)
