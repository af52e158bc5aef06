"""Why the rope SL policy barely acts: one-factor diagnostics on a trained SL checkpoint,
with no retraining.

    .venv/bin/python benchmarks/rope_sl_diagnosis.py --run runs/rope_sl_diag/sl_e40 --step 1000 \
        --train-seeds 0 1 2 3 4 6 --heldout-seeds 1000 1001 1002 1003 1004 1005 \
        --settings 20:1.0 100:1.0 20:1.0:67 --execute \
        --out docs/results/rope_sl_diagnosis --states-dir runs/rope_sl_diag

States: the scripted expert's own trajectories, replayed exactly as the data collection did
(``reset(seed)``, expert stream ``default_rng([seed, 0x5E1])``). ``--train-seeds`` are expert
start seeds in the train split of the SL data set (``--expert-episodes`` episodes from seed 0,
split by ``pam_jax.data.scan.split_episodes``; checked), so the expert alternatives there are
the training annotations; ``--heldout-seeds`` are tuning start seeds (1000..1029),
never seen in training. Every state visited by the expert (before its action) is analysed.

At each state the SL policy samples N candidates (as the closed loop does: the cloud observed
with its noise, subsampled to the policy's points) under each inference setting of
``--settings`` (DDIM steps / eta). Per candidate (distances in xy, cm):

* ``pick_cm``: to the nearest expert alternative's pick; ``place_cm``: to the nearest
  alternative's place; ``pair_cm``: min over alternatives of max(pick, place) distance (the
  nearest annotated pick-and-place pair);
* ``refused``: the pick lies more than the grasp tolerance from every rope vertex (raw and as
  executed with the task's pick snapping); ``snap_shift_cm``: how far snapping moved the pick;
  ``snap_vertex_shift``: how many vertices along the rope the grasped vertex moved;
* ``target_err_cm``: distance of the place from the circle position (the expert's fit) of
  the vertex actually grasped; the same for the place as sampled and for "place = where the
  vertex already is" (``noop_target_err_cm``, the do-nothing reference);
* ``end_pick``: the grasped vertex is within 3 of a rope end.

A setting ``steps:eta:k`` also sets the pick-snapping neighbourhood to k cloud points (the
published rule's 200 are counted on a 3000-point cloud; the policy's cloud has fewer).

``--alternatives`` (no SL run): every expert alternative executed from the state, i.e. what
the SL loss imitates (it draws one annotated pose uniformly per sample): gain of the first
(executed) one, of a uniformly drawn one, of the best, by rank.

    .venv/bin/python benchmarks/rope_sl_diagnosis.py --alternatives --train-seeds 0 1 2 \
        --heldout-seeds 1000 1001 1002 --out docs/results/rope_sl_diagnosis --tag alternatives

``--locality`` (no SL run): could the expert's place be read off the cloud near its pick? Per
alternative, the distance of its place from the radial projection of its pick onto the circle
the expert fits (centred on the rope's centroid, circumference = the rope's length), and from
its pick. If the place followed from the pick's own position, the first would be the expert's
noise (~0.5 cm); the expert instead places each vertex at its slot by its index along the rope.

    .venv/bin/python benchmarks/rope_sl_diagnosis.py --locality --train-seeds --heldout-seeds 1000 1001 ... \
        --out docs/results/rope_sl_diagnosis --tag locality

With ``--execute``, candidate 0 (what the ``sl`` method executes) is run from the saved
state, snapped and as sampled, beside the expert's executed action: gain, no-op (|gain| <
0.005) and refusal fractions.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import time

import jax
import numpy as np

from pam_jax import policy as policy_lib
from pam_jax import select as select_lib
from pam_jax.data.scan import split_episodes
from pam_jax.eval import closed_loop
from pam_jax.sim import make_task
from pam_jax.sim.experts import expert_actions, rope_targets
from pam_jax.sim.oracle import candidate_gains

RNG_EXPERT = 0x5E1   # the collection's expert stream tag (pam_jax.sim.episodes)
NOOP = 0.005


def _states(task, seeds):
    """Yield (seed, step, state, vertices, alternatives (M,2,3), targets (n,2)) along the expert's
    own trajectories."""
    for seed in seeds:
        task.reset(seed)
        rng = np.random.default_rng([seed, RNG_EXPERT])
        while not task.done:
            step = task.steps_taken
            cloud = task.observe()
            alts = expert_actions(task, rng, 10)
            yield seed, step, task.save_state(), cloud, alts
            task.step(alts[0])


def _dist_xy(a, b):
    return np.linalg.norm(np.asarray(a)[..., :2] - np.asarray(b)[..., :2], axis=-1)


def analyse(task, agents, seeds, *, execute: bool, log=print):
    rows = []
    for seed, step, state, cloud, alts in _states(task, seeds):
        task.restore_state(state)
        v = task.vertices()
        t = rope_targets(task)
        n = len(v)
        rec = {"seed": seed, "step": step, "score": float(task.score()), "settings": {}}
        ex_pick = alts[0, 0]
        i_ex = int(np.argmin(_dist_xy(v, ex_pick)))
        rec["expert"] = {"target_err_cm": 100 * float(_dist_xy(alts[0, 1], t[i_ex])),
                         "noop_target_err_cm": 100 * float(_dist_xy(v[i_ex], t[i_ex])),
                         "end_pick": bool(min(i_ex, n - 1 - i_ex) < 3), "alternatives": int(len(alts))}
        for name, agent in agents.items():
            rng = np.random.default_rng([seed, step, 99])
            raw, snapped = agent.candidates(cloud, rng, jax.random.key(seed * 1000 + step))
            c = []
            for a_raw, a_ex in zip(raw, snapped):
                dp = _dist_xy(a_raw[0], alts[:, 0])
                dq = _dist_xy(a_raw[1], alts[:, 1])
                dv_raw = _dist_xy(v, a_raw[0])
                dv_ex = _dist_xy(v, a_ex[0])
                i_raw, i_ex_ = int(np.argmin(dv_raw)), int(np.argmin(dv_ex))
                c.append({
                    "pick_cm": 100 * float(dp.min()), "place_cm": 100 * float(dq.min()),
                    "pair_cm": 100 * float(np.maximum(dp, dq).min()),
                    "refused_raw": bool(dv_raw.min() > task.grasp_tolerance),
                    "refused": bool(dv_ex.min() > task.grasp_tolerance),
                    "snap_shift_cm": 100 * float(_dist_xy(a_raw[0], a_ex[0])),
                    "snap_vertex_shift": abs(i_ex_ - i_raw),
                    "target_err_cm": 100 * float(_dist_xy(a_ex[1], t[i_ex_])),
                    "noop_target_err_cm": 100 * float(_dist_xy(v[i_ex_], t[i_ex_])),
                    "end_pick": bool(min(i_ex_, n - 1 - i_ex_) < 3),
                    "end_pick_raw": bool(min(i_raw, n - 1 - i_raw) < 3),
                })
            s = {"candidates": c}
            if execute:
                if "gain" not in rec["expert"]:
                    g = candidate_gains(task, state, alts[:1])[0][0]
                    rec["expert"]["gain"] = None if np.isnan(g) else float(g)
                gains, _ = candidate_gains(task, state, np.stack([snapped[0], raw[0]]))
                s["gain_snapped"], s["gain_raw"] = (None if np.isnan(g) else float(g) for g in gains)
                s["gain_expert"] = rec["expert"]["gain"]
            rec["settings"][name] = s
        rows.append(rec)
        log(f"  seed {seed} step {step}: " + ", ".join(
            f"{k} pick {np.mean([x['pick_cm'] for x in s['candidates']]):.1f} place "
            f"{np.mean([x['place_cm'] for x in s['candidates']]):.1f}" for k, s in rec["settings"].items()))
    return rows


def alternatives(task, seeds, log=print):
    """The training target itself: the gain of every expert alternative (SL draws one of the
    annotated poses uniformly per sample), by its rank in the expert's order."""
    rows = []
    for seed, step, state, _, alts in _states(task, seeds):
        gains, _ = candidate_gains(task, state, alts)
        rows.append({"seed": seed, "step": step, "gains": [None if np.isnan(g) else float(g) for g in gains]})
        log(f"  seed {seed} step {step}: first {gains[0]:+.3f}, mean of {len(gains)} {np.nanmean(gains):+.3f}")
    g_all = [g for r in rows for g in r["gains"]]
    return rows, {
        "states": len(rows), "alternatives_per_state": float(np.mean([len(r["gains"]) for r in rows])),
        "gain_first": float(np.mean([r["gains"][0] or 0.0 for r in rows])),
        "gain_uniform_alternative": float(np.mean([np.mean([g or 0.0 for g in r["gains"]]) for r in rows])),
        "gain_best_alternative": float(np.mean([max(g or 0.0 for g in r["gains"]) for r in rows])),
        "noop_uniform_alternative": float(np.mean([g is None or abs(g) < NOOP for g in g_all])),
        "negative_uniform_alternative": float(np.mean([g is not None and g <= -NOOP for g in g_all])),
        "gain_by_rank": [float(np.mean([r["gains"][k] or 0.0 for r in rows if len(r["gains"]) > k]))
                         for k in range(max(len(r["gains"]) for r in rows))]}


def radial_offset(vertices_xy: np.ndarray, length: float, action: np.ndarray) -> tuple[float, float]:
    """(cm) the distance of the action's place from the radial projection of its pick onto the
    circle of circumference `length` centred on the vertices' centroid, and from its pick."""
    c = np.asarray(vertices_xy, np.float64).mean(axis=0)
    pick, place = np.asarray(action, np.float64)[0, :2], np.asarray(action, np.float64)[1, :2]
    u = (pick - c) / max(np.linalg.norm(pick - c), 1e-12)
    radial = c + length / (2 * np.pi) * u
    return 100 * float(np.linalg.norm(place - radial)), 100 * float(np.linalg.norm(place - pick))


def locality(task, seeds, log=print):
    """:func:`radial_offset` of the expert alternatives along the expert's trajectories: all of
    them (what SL imitates: one drawn uniformly per sample) and the first (the executed one)."""
    rows, first = [], []
    for seed, step, _, _, alts in _states(task, seeds):
        v = task.vertices()[:, :2]
        rows += [radial_offset(v, task.length, a) for a in alts]
        first.append(rows[-len(alts)])

    def stats(r):
        radial, travel = np.array(r).T
        return {"n": len(r), "radial_cm_median": float(np.median(radial)),
                "radial_cm_q75": float(np.percentile(radial, 75)), "pick_place_cm_median": float(np.median(travel))}

    out = {"circle_radius_cm": 100 * task.length / (2 * np.pi), "all": stats(rows), "first": stats(first)}
    log(json.dumps(out))
    return out


def summarise(rows):
    out = {"states": len(rows),
           "expert": {"target_err_cm": float(np.mean([r["expert"]["target_err_cm"] for r in rows])),
                      "noop_target_err_cm": float(np.mean([r["expert"]["noop_target_err_cm"] for r in rows])),
                      "end_pick": float(np.mean([r["expert"]["end_pick"] for r in rows])),
                      "alternatives": float(np.mean([r["expert"]["alternatives"] for r in rows]))},
           "settings": {}}
    for name in rows[0]["settings"]:
        cands = [c for r in rows for c in r["settings"][name]["candidates"]]
        first = [r["settings"][name]["candidates"][0] for r in rows]

        def m(key, xs=cands):
            return float(np.mean([float(x[key]) for x in xs]))

        def med(key, xs=cands):
            return float(np.median([float(x[key]) for x in xs]))

        s = {k: m(k) for k in ("pick_cm", "place_cm", "pair_cm", "refused_raw", "refused", "snap_shift_cm",
                               "snap_vertex_shift", "target_err_cm", "noop_target_err_cm", "end_pick", "end_pick_raw")}
        s.update({f"median_{k}": med(k) for k in ("pick_cm", "place_cm", "pair_cm", "target_err_cm")})
        s["frac_pair_within_3cm"] = float(np.mean([c["pair_cm"] < 3 for c in cands]))
        s["frac_target_closer_than_noop"] = float(np.mean([c["target_err_cm"] < c["noop_target_err_cm"] for c in cands]))
        # of each state's N candidates, the best one (what a perfect selector could use)
        s["best_of_n_pair_cm"] = float(np.mean([min(c["pair_cm"] for c in r["settings"][name]["candidates"]) for r in rows]))
        s["first_candidate_pair_cm"] = m("pair_cm", first)
        ex = [r["settings"][name] for r in rows if "gain_snapped" in r["settings"][name]]
        if ex:
            for k in ("gain_snapped", "gain_raw", "gain_expert"):
                g = [e[k] for e in ex]
                valid = [x for x in g if x is not None]
                s[k] = {"mean": float(np.mean([x if x is not None else 0.0 for x in g])),
                        "refused": float(np.mean([x is None for x in g])),
                        "noop": float(np.mean([x is None or abs(x) < NOOP for x in g])),
                        "positive": float(np.mean([x is not None and x >= NOOP for x in g])),
                        "mean_valid": float(np.mean(valid)) if valid else None}
        out["settings"][name] = s
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="", help="SL run folder")
    ap.add_argument("--step", type=int, default=None, help="checkpoint step (default: newest)")
    ap.add_argument("--train-seeds", type=int, nargs="*", default=list(range(10)))
    ap.add_argument("--heldout-seeds", type=int, nargs="*", default=list(range(1000, 1010)))
    ap.add_argument("--settings", nargs="+", default=["20:1.0"],
                    help="DDIM steps:eta[:snap neighbourhood], e.g. 20:1.0 100:1.0 20:1.0:67")
    ap.add_argument("--candidates", type=int, default=8)
    ap.add_argument("--execute", action="store_true", help="execute candidate 0 and the expert's action")
    ap.add_argument("--alternatives", action="store_true",
                    help="only the gains of every expert alternative (the SL training target); no SL run")
    ap.add_argument("--locality", action="store_true",
                    help="only how far the expert's places lie from their picks' radial projections; no SL run")
    ap.add_argument("--no-snap-pick", action="store_true")
    ap.add_argument("--expert-episodes", type=int, default=40, help="episodes of the SL data set (split check)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--tag", default="offline")
    ap.add_argument("--states-dir", default="", help="folder of the per-state files (default: --out)")
    a = ap.parse_args(argv)
    if any(s >= 2000 for s in a.heldout_seeds):
        raise SystemExit("heldout seeds: tuning start states only (1000..1999)")
    train_split = split_episodes(list(range(a.expert_episodes)), seed=0)["train"]
    if not set(a.train_seeds) <= set(train_split):
        raise SystemExit(f"train seeds: expected episodes of the train split {train_split}")
    task = make_task("rope")
    out_dir = pathlib.Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    if a.locality:
        result = {"train_seeds": a.train_seeds, "heldout_seeds": a.heldout_seeds,
                  **{split: locality(task, seeds) for split, seeds in (("train", a.train_seeds),
                                                                        ("heldout", a.heldout_seeds)) if seeds}}
        (out_dir / f"{a.tag}.json").write_text(json.dumps(result, indent=1))
        return 0
    if a.alternatives:
        result = {"train_seeds": a.train_seeds, "heldout_seeds": a.heldout_seeds, "expert_episodes": a.expert_episodes}
        for split, seeds in (("train", a.train_seeds), ("heldout", a.heldout_seeds)):
            if seeds:
                rows, result[split] = alternatives(task, seeds)
                (out_dir / f"{a.tag}_{split}_states.json").write_text(json.dumps(rows))
        (out_dir / f"{a.tag}.json").write_text(json.dumps(result, indent=1))
        print(json.dumps(result, indent=1))
        return 0
    agents = {}
    for s in a.settings:
        k, eta, *nb = s.split(":")
        snap = select_lib.task_snap
        if nb:   # the snapping neighbourhood size for this setting only
            policy_lib.task_snap = lambda *x, **y: {**snap(*x, **y), "snap_neighbours": int(nb[0])}
        try:
            agents[s] = closed_loop.Agent("sl_random", closed_loop.Runs(sl=a.run), data_task="rope",
                                          num_candidates=a.candidates, num_inference_steps=int(k), eta=float(eta),
                                          snap_pick=not a.no_snap_pick, sl_step=a.step)
        finally:
            policy_lib.task_snap = snap
    result = {"run": a.run, "expert_episodes": a.expert_episodes, "step": a.step, "candidates": a.candidates,
              "snap_pick": not a.no_snap_pick, "settings": a.settings, "train_seeds": a.train_seeds, "heldout_seeds": a.heldout_seeds}
    t0 = time.perf_counter()
    for split, seeds in (("train", a.train_seeds), ("heldout", a.heldout_seeds)):
        if not seeds:
            continue
        print(f"[{split}] seeds {seeds}")
        rows = analyse(task, agents, seeds, execute=a.execute)
        result[split] = summarise(rows)
        states_dir = pathlib.Path(a.states_dir or a.out)
        states_dir.mkdir(parents=True, exist_ok=True)
        (states_dir / f"{a.tag}_{split}_states.json").write_text(json.dumps(rows))
    result["wall_s"] = time.perf_counter() - t0
    (out_dir / f"{a.tag}.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in ("train", "heldout") if k in result}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
