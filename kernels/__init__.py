"""edgelstm.kernels: the float64 NumPy reference, Numba CPU kernels, numba.cuda kernels."""
