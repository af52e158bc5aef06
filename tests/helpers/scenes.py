"""World-frame test scenes for the serving tests."""
import pathlib

import numpy as np

NP = 64   # tiny_config's data.num_points
REPO = pathlib.Path(__file__).resolve().parents[2]


def scene(count=2000, seed=0, voxel=0.002) -> np.ndarray:
    """A task-frame scene (float64) inside the runs' normalisation range (centre 0, scale 0.5):
    points at voxel centres ((k + 1/2) * voxel, the toy task's voxel size) whose bounding box is
    centred on the origin, so that float rounding in a translated or rotated copy never moves a
    point across a voxel boundary; a uniform lattice has no per-axis 3-sigma outliers."""
    half = np.array([100, 80, 12])
    k = np.random.default_rng(seed).integers(-half, half, (count, 3))
    k[0], k[1] = -half, half - 1
    return (k + 0.5) * voxel


def rotation(ax: float, az: float) -> np.ndarray:
    """R = Rz(az) @ Rx(ax)."""
    cx, sx, cz, sz = np.cos(ax), np.sin(ax), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ rx
