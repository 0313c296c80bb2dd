"""The TFLM and LiteRT interpreters as test oracles (the `test` extra installs both)."""
from __future__ import annotations

import numpy as np
import pytest


def tflm():
    return pytest.importorskip("tflite_micro.python.tflite_micro.runtime",
                               reason="tflite-micro (the TFLM interpreter) is in the test extra")


def run_tflm(data: bytes, x, tensors=()):
    """Run a .tflite (bytes) in a freshly reset TFLM interpreter: the output, and `tensors` by index."""
    rt = tflm()
    cfg = rt.InterpreterConfig.kPreserveAllTensors if tensors else rt.InterpreterConfig.kAllocationRecording
    it = rt.Interpreter.from_bytes(data, intrepreter_config=cfg)
    it.reset()
    it.set_input(x, 0)
    it.invoke()
    out = np.asarray(it.get_output(0))
    return out, [np.asarray(it.GetTensor(i, 0)["tensor_data"]) for i in tensors]
