"""Import before numpy or TensorFlow: pins this process to one core, one BLAS/OpenMP thread.

Linux affinity is per thread and inherited only by threads started later, and
numpy's OpenBLAS starts its pool at import: pinning after `import numpy` leaves
those threads free to spin on the other cores, so CPU time exceeds wall time and
the per-core figures are wrong.
"""
import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")
CORE = sorted(os.sched_getaffinity(0))[0]
os.sched_setaffinity(0, {CORE})
