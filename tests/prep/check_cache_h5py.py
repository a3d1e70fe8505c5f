#!/usr/bin/env python3
"""Reads a sample cache written by cmds-prep with h5py + hdf5plugin (the Python ecosystem's
reader of zstd filter 32015) and checks the layout of schemas/sample_cache_v1.md.
Exits 77 (ctest: skipped) when h5py or hdf5plugin are not installed."""
import sys

try:
    import h5py
    import hdf5plugin  # noqa: F401  registers filter 32015
    import numpy as np
except ImportError as e:
    print(f"skipped: {e}")
    sys.exit(77)

failed = 0
passed = 0


def check(cond, what):
    global failed, passed
    passed += bool(cond)
    if not cond:
        failed += 1
        print("FAIL:", what)


for path in sys.argv[1:]:
    with h5py.File(path, "r") as f:
        check(f.attrs["cmds_schema"] in (b"cmds.sample_cache", "cmds.sample_cache"), "schema name")
        check(int(f.attrs["cmds_schema_version"]) == 1, "schema version")
        S = int(f.attrs["resolution"])
        for g in ("support", "test"):
            grp = f[g]
            n = grp["rgb"].shape[0]
            check(grp["rgb"].shape == (n, S, S, 3) and grp["rgb"].dtype == np.uint8, f"{g}/rgb")
            check(grp["xyz"].dtype == np.float32 and grp["xyz"].shape == (n, S, S, 3), f"{g}/xyz")
            check(grp["rgb"].id.get_create_plist().get_filter(0)[0] == 32015, f"{g}/rgb uses zstd 32015")
            check(grp["rgb"].chunks == (1, S, S, 3), f"{g}/rgb chunked per sample")
            nrm = grp["normals"][...]
            length = np.linalg.norm(nrm, axis=-1)
            check(np.all((np.abs(length - 1) < 1e-4) | (length == 0)), f"{g}/normals unit or zero")
            fg = grp["fg_mask"][...]
            xyz = grp["xyz"][...]
            check(np.array_equal(fg.astype(bool), np.all(xyz != 0, axis=-1)), f"{g}/fg_mask = all coords non-zero")
            gt = grp["gt_mask"][...]
            check(set(np.unique(gt)) <= {0, 1}, f"{g}/gt_mask is 0/1")
            lab = grp["label"][...]
            check(np.array_equal(lab, (gt.reshape(n, -1).max(axis=1) > 0).astype(np.uint8)) or g == "test",
                  f"{g}/label")
            ids = [s.decode() for s in grp["sample_id"][...]]
            check(len(set(ids)) == n, f"{g}/sample_id unique")
        print(f"{path}: support {f['support/rgb'].shape[0]}, test {f['test/rgb'].shape[0]}, S={S}")

print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
