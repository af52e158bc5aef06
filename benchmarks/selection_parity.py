"""Does a change keep the selector's float32 results? Save one set of decisions per code version,
then compare them:

    PYTHONPATH=<old checkout> python benchmarks/selection_parity.py save before.npz
    python benchmarks/selection_parity.py save after.npz
    python benchmarks/selection_parity.py compare before.npz after.npz

Each set: the reference-size networks (`pam-jax bench`'s, every parameter perturbed by
N(0, 0.02) so that no gate is zero), 2 clouds of 3000 points, implicit selection of K = 8
candidates at 10/10 and 100/100, a fixed key, the default kernel forms (the runtime config's
defaults). `compare` prints the chosen indices of both and the largest
difference of every other output.
"""
import sys

import numpy as np


def save(path: str) -> None:
    import jax

    from pam_jax.bench.compute import _reference_models
    from pam_jax.config import DiffusionConfig, ModelConfig
    from pam_jax.normalize import NormStats
    from pam_jax.select import SelectConfig, make_selector

    graphdef, ref, pol = _reference_models(ModelConfig())
    rng = np.random.default_rng(5)
    ref, pol = (jax.tree.map(lambda a: a + 0.02 * rng.standard_normal(a.shape).astype(np.float32), p)
                for p in (ref, pol))
    points = np.random.default_rng(0).uniform(-0.5, 0.5, (2, 3000, 3)).astype(np.float32)
    out = {}
    for steps in (10, 100):
        cfg = SelectConfig(mode="implicit", num_candidates=8, num_inference_steps=steps, eta=1.0,
                           reward_samples=steps)
        chosen = make_selector(graphdef, DiffusionConfig(), NormStats.identity(), cfg)(ref, pol, points,
                                                                                        jax.random.key(3))
        out.update({f"{steps}_{name}": np.asarray(v) for name, v in chosen._asdict().items()})
    np.savez(path, **out)
    print(f"saved {path}")


def compare(a_path: str, b_path: str) -> None:
    a, b = np.load(a_path), np.load(b_path)
    for name in a.files:
        x, y = a[name], b[name]
        if name.endswith("index"):
            print(f"{name}: {x.tolist()} / {y.tolist()}", "same" if np.array_equal(x, y) else "DIFFERENT")
        else:
            print(f"{name}: largest difference {np.abs(x - y).max():.3g} (largest value {np.abs(x).max():.3g})")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "save":
        save(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "compare":
        compare(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__.split("\n\n")[1])
