#!/usr/bin/env python3
"""h5py reads our float16 feature datasets as numpy float16 (skipped, 77, without h5py)."""
import sys

try:
    import h5py
    import hdf5plugin  # noqa: F401
    import numpy as np
except ImportError as e:
    print("skipped:", e)
    sys.exit(77)

with h5py.File(sys.argv[1], "r") as f:
    d = f["test/rgb"]
    ok = d.dtype == np.float16 and d.shape == (7, 3, 4, 4, 8) and f.attrs["blocks"] in (b"4,7,11", "4,7,11")
    bits = d[2].view(np.uint16).ravel()
    want = np.array([((1 * 131 + 0 * 17 + 2 * 1009 + i * 7) & 0x3BFF) for i in range(bits.size)], np.uint16)
    ok = ok and np.array_equal(bits, want) and f["test/rgb_done"][...].all()
print("1 passed, 0 failed" if ok else "0 passed, 1 failed")
sys.exit(0 if ok else 1)
