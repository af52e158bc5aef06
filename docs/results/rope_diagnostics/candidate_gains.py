import yaml, glob, numpy as np, sys
for task in sys.argv[1:]:
    G = []
    for f in glob.glob(f"runs/study_{task}/src/finetune/*/metadata.yaml"):
        m = yaml.safe_load(open(f))
        sim = m.get("sim") or m.get("pam_jax", {}).get("sim") or {}
        g = sim.get("gains")
        if g is None:
            # search
            def find(d):
                if isinstance(d, dict):
                    if "gains" in d: return d
                    for v in d.values():
                        r = find(v)
                        if r: return r
            sim = find(m); g = sim["gains"]
        G.append([np.nan if x is None else x for x in g] + [sim.get("expert_gain") or np.nan])
    G = np.array(G, float); g = G[:, :-1]; e = G[:, -1]
    refused = np.isnan(g).mean()
    g0 = np.where(np.isnan(g), 0, g)
    spread = g0.max(1) - g0.mean(1)
    print(task, "states", len(G), "refused %.2f" % refused, "mean gain %.4f" % np.nanmean(g), "best-mean %.4f" % spread.mean(),
          "std within state %.4f" % np.nanstd(g, 1).mean(), "expert gain %.4f" % np.nanmean(e),
          "frac states with best>tie(0.01) over 2nd: %.2f" % np.mean(np.sort(g0,1)[:,-1]-np.sort(g0,1)[:,-2] > 0.01))
