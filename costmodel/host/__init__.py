"""The model of edgelstm's own CPU kernel on this machine: the host profile (profile.py),
its calibration (machine.py, harness.py, micro.py, routines.py, calibrate.py) and
`predict_host` (model.py). The only part of the cost model that imports `kernels`."""
