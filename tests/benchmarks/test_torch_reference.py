"""The eager PyTorch re-statement of the reference (benchmarks/torch_reference.py); skipped without torch."""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "benchmarks"))


def test_torch_reference_decides_when_torch_is_there():
    import numpy as np
    import pytest

    pytest.importorskip("torch")
    from torch_reference import make_reference

    pts = np.random.default_rng(0).uniform(-0.5, 0.5, (2, 40, 3)).astype(np.float32)
    a = make_reference()(pts, num_candidates=3, steps=2, samples=2, chunk=1)
    assert a.shape == (2, 2, 3) and np.isfinite(a).all() and np.abs(a).max() <= 1.0


def test_torch_reference_train_step_updates_the_network():
    import numpy as np
    import pytest

    torch = pytest.importorskip("torch")
    from torch_reference import make_train_step

    step, to_device = make_train_step(replicas=2, device="cpu")
    rng = np.random.default_rng(0)
    batch = to_device(rng.uniform(-0.5, 0.5, (2, 40, 3)).astype(np.float32),
                      rng.uniform(-0.5, 0.5, (2, 2, 3)).astype(np.float32))
    losses = [step(*batch) for _ in range(3)]
    assert all(np.isfinite(losses)) and isinstance(losses[0], float)
    assert torch.get_default_device().type == "cpu"
