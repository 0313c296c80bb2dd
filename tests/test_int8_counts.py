"""Counts of the int8 kernel's integer work against an instrumented reference, and RAM against TFLM's arena."""
from __future__ import annotations

import re

import importlib.util

import numpy as np
import pytest

import edgelstm as el
from edgelstm.kernels import int8_reference as R
from edgelstm.tflite import quantize, write_tflite
from tflm_oracle import tflm

# Writing a .tflite file (the exporter, and the bad files built for the error tests) needs
# flatbuffers, the 'tflite' extra (also in 'test'); a core-only install skips these.
NEEDS_FLATBUFFERS = pytest.mark.skipif(importlib.util.find_spec("flatbuffers") is None,
                                       reason="writing .tflite files needs flatbuffers (the 'tflite' extra)")



@pytest.mark.parametrize("E,H,L,T,B", [(1, 1, 1, 1, 1), (7, 5, 1, 9, 2), (12, 20, 2, 6, 1), (30, 8, 3, 4, 3)])
def test_int8_counts_match_the_instrumented_reference(E, H, L, T, B):
    rng = np.random.default_rng(0)
    w = el.LSTMWeights.random(el.LSTMSpec(E, H, num_layers=L, bias="keras"), seed=1, scale=0.5)
    m = quantize(w, rng.standard_normal((T, 4, E)), batch=B)
    ops = {}
    x = rng.integers(-128, 128, size=(T, B, E)).astype(np.int8)
    for q in m.lstms:                                   # the reference counts what it does, as it does it
        x = R.lstm_int8_reference(x, q, ops=ops)[0]
    c = el.count_int8_lstm(m.spec, batch=B, seq_len=T)
    assert {k: getattr(c, k) for k in ops} == ops
    assert el.count(m.spec, batch=B, seq_len=T, dtype="int8").int8_ops == c
    assert c.macs == el.count(el.LSTMSpec(E, H, num_layers=L, bias="keras"), batch=B, seq_len=T).macs_per_sequence


def _allocations(data, capfd):
    rt = tflm()
    it = rt.Interpreter.from_bytes(data)
    t = it.get_input_details(0)
    it.set_input(np.zeros(t["shape"], t["dtype"]), 0)
    it.invoke()
    capfd.readouterr()
    it.print_allocations()                             # TFLM's RecordingMicroAllocator, on stderr
    text = "".join(capfd.readouterr())
    head = int(re.search(r"Arena allocation head (\d+) bytes", text).group(1))
    var = int(re.search(r"'TfLiteTensor variable buffer data' used (\d+) bytes", text).group(1))
    return head, var


@pytest.mark.parametrize("E,H,T,B", [(8, 16, 10, 1), (12, 32, 20, 3), (257, 80, 49, 1), (5, 7, 3, 2)])
@NEEDS_FLATBUFFERS
def test_int8_ram_matches_tflm_arena(E, H, T, B, capfd):
    """An LSTM-only model: TFLM's planned (head) arena is the input and output sequences plus its 4 int16
    gate buffers, and its variable buffers are the h/c states, each buffer rounded up to 16 bytes."""
    rng = np.random.default_rng(0)
    w = el.LSTMWeights.random(el.LSTMSpec(E, H, bias="keras"), seed=1, scale=0.5)
    m = quantize(w, rng.standard_normal((T, 4, E)), batch=B)
    head, var = _allocations(write_tflite(m.graph), capfd)
    c = el.count_int8_lstm(m.spec, batch=B, seq_len=T)
    align = lambda n: -(-n // 16) * 16                  # noqa: E731   (TFLM aligns every buffer to 16 B)
    assert head == align(T * B * E) + align(T * B * H) + 4 * align(2 * B * H)
    assert 0 <= head - (c.io_bytes + c.scratch_bytes) < 16 * 6
    assert var == align(B * H) + align(2 * B * H)
    assert c.state_bytes == B * H + 2 * B * H


def test_cli_size_of_a_tflite_model(capsys, tmp_path):
    import json
    import os

    from edgelstm.cli import main
    path = os.path.join(os.path.dirname(__file__), "data", "tflm_micro_speech_lstm_int8.tflite")
    assert main(["size", "--model", path, "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert (d["batch"], d["seq_len"], d["dtype"]) == (1, 49, "int8")          # taken from the file
    # the KWS model's LSTM: 49 steps x 4H(E + H) MACs = the figure the issue quotes for LiteRT (5.3 M)
    assert d["int8_ops"]["macs"] == 49 * 4 * 80 * (257 + 80) == d["macs_per_sequence"]
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(open(path, "rb").read()[:1000])
    assert main(["size", "--model", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.tflite" in err and "truncated" in err
