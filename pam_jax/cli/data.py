"""``pam-jax data ...``: build, inspect and generate datasets.

    pam-jax data build deformpam --src DIR --task rope --kind supervised [--data-dir OUT] [--strict]
    pam-jax data inspect --data-dir OUT --task rope --kind supervised [--png FILE]
    pam-jax data fixture --out DIR [--task rope] [--kind supervised]
    pam-jax data export-parquet --data-dir OUT --task rope --kind supervised --out DIR [--split train]

``add_subparser(subparsers)`` registers the ``data`` command on the main ``pam-jax`` parser
(:mod:`pam_jax.cli`), which turns expected failures into one ``pam-jax: error: ...`` line.
"""
from __future__ import annotations

import argparse
import json
import logging

from pam_jax import tasks as tasks_lib


def _setup_logging(verbose: bool = False) -> None:
    """Warnings (e.g. each skipped sample) to stderr; --verbose adds info messages."""
    logging.basicConfig(format="%(levelname)s: %(message)s")   # no-op if already configured
    logging.getLogger("pam_jax.data").setLevel(logging.INFO if verbose else logging.WARNING)


# --------------------------------------------------------------------------- build


def cmd_build(args) -> int:
    from pam_jax.data.build import build as build_dataset

    _setup_logging(args.verbose)
    report = build_dataset(args.src, task=args.task, kind=args.kind, data_dir=args.data_dir,
                           strict=args.strict, split_seed=args.split_seed,
                           overwrite=args.overwrite, progress=not args.no_progress)
    out = report["dataset_dir"]
    if report.get("reused"):
        print(f"deformpam/{args.task}_{args.kind} already built at {out} (--overwrite to rebuild)")
    counts = report.get("num_examples", {})
    eps = report.get("episodes", {})
    print(f"deformpam/{args.task}_{args.kind}: "
          + ", ".join(f"{k} {counts.get(k, 0)} examples / {len(eps.get(k, []))} episodes"
                      for k in ("train", "validation", "test")))
    skipped = report.get("skipped", [])
    bad = [s for s in skipped if s["category"] == "malformed"]
    other = [s for s in skipped if s["category"] == "filtered"]
    if bad:
        print(f"skipped {len(bad)} malformed sample(s) of {report.get('found', '?')}:")
        for s in bad[:50]:
            print(f"  {s['sample']}: {s['reason']}")
        if len(bad) > 50:
            print(f"  ... and {len(bad) - 50} more (see {out}/pam_jax_build.json)")
    if other:
        print(f"left out {len(other)} sample(s) of other action types")
    print(f"dataset: {out}")
    data_dir = args.data_dir or "~/tensorflow_datasets"
    print(f"inspect: pam-jax data inspect --data-dir {data_dir} --task {args.task} --kind {args.kind}")
    return 0


# --------------------------------------------------------------------------- inspect


def cmd_inspect(args) -> int:
    from pam_jax.data import inspect_dataset, sources, stats

    _setup_logging(args.verbose)
    if args.task:
        ds_dir = sources.dataset_dir(args.data_dir, args.task, args.kind)
    else:
        ds_dir = sources.resolve_dataset_dir(args.data_dir)
    task, kind = sources.task_kind_of(ds_dir)
    sizes = sources.split_sizes(ds_dir)
    report = sources.read_build_report(ds_dir) or {}
    print(f"dataset   deformpam/{task}_{kind} at {ds_dir}")
    eps = report.get("episodes", {})
    print("splits    " + ", ".join(
        f"{k} {v}" + (f" ({len(eps[k])} episodes)" if k in eps else "") for k, v in sizes.items()))
    if report:
        skipped = report.get("skipped", [])
        bad = [s for s in skipped if s["category"] == "malformed"]
        print(f"build     {report.get('found', '?')} sample folders in {report.get('src', '?')}; "
              f"{len(bad)} malformed skipped, {len(skipped) - len(bad)} of other action types left out")
        for s in bad[:20]:
            print(f"          skipped {s['sample']}: {s['reason']}")
    split = args.split if args.split in sizes else next(iter(sizes))
    summary = inspect_dataset.field_summary(ds_dir, split, max_records=args.max_records)
    print(f"fields    ({split}, {summary['records']} records)")
    width = max(len(k) for k in summary["fields"])
    for k, v in summary["fields"].items():
        print(f"  {k:<{width}}  {v['shape']:<16} {v['dtype']}")
    print("types     " + ", ".join(f"{k} {v}" for k, v in summary["action_types"].items()))
    shapes = stats.dataset_shapes(ds_dir)
    print(f"points    {shapes['min_points']}..{shapes['max_points']} per cloud "
          f"(mean {shapes['mean_points']:.0f})")
    norm = stats.load_norm_stats(ds_dir)
    print(f"norm      center {[round(c, 4) for c in norm.center]}, scale {round(norm.scale[0], 4)} "
          f"(task frame, task-default augmentation)")
    if args.json:
        print(json.dumps({"dataset_dir": str(ds_dir), "splits": sizes, "fields": summary,
                          "shapes": shapes, "norm": norm.to_dict()}, indent=2))
    if args.num > 0:
        png = args.png or f"deformpam_{task}_{kind}_{split}.png"
        path = inspect_dataset.render(ds_dir, png, split=split, num=args.num, augment=args.augment)
        print(f"png       {path}")
    return 0


# --------------------------------------------------------------------------- fixture


def cmd_fixture(args) -> int:
    from pam_jax.data import fixtures

    info = fixtures.write_fixture(args.out, task=args.task, kind=args.kind,
                                  num_episodes=args.episodes, malformed=tuple(args.malformed),
                                  seed=args.seed)
    print(f"wrote {len(info['samples'])} samples in {args.episodes} episodes"
          + (f" + {len(info['malformed'])} malformed ({', '.join(info['malformed'])})"
             if info["malformed"] else "") + f" to {args.out}")
    print(f"build: pam-jax data build deformpam --src {args.out} --task {args.task} --kind {args.kind}")
    return 0


# --------------------------------------------------------------------------- export-parquet


def _dataset_dir(args):
    from pam_jax.data import sources

    if args.task:
        return sources.dataset_dir(args.data_dir, args.task, args.kind)
    return sources.resolve_dataset_dir(args.data_dir)


def cmd_export_parquet(args) -> int:
    from pam_jax.data import parquet

    _setup_logging(args.verbose)
    ds_dir = _dataset_dir(args)
    report = parquet.export_parquet(ds_dir, args.out, splits=args.split or None, overwrite=args.overwrite)
    for split, path in report["files"].items():
        print(f"{split}: {report['rows'][split]} rows -> {path}")
    print(f"load: datasets.load_dataset(\"parquet\", data_dir=\"{report['out_dir']}\")")
    return 0


# --------------------------------------------------------------------------- parser


def add_subparser(subparsers) -> argparse.ArgumentParser:
    """Register ``data`` (with ``build``, ``inspect``, ``fixture``, ``export-parquet``) on an argparse subparsers
    object; each leaf sets ``func`` (called with the parsed args, returns an exit code)."""
    tasks = list(tasks_lib.data_task_names())
    p = subparsers.add_parser(
        "data", help="build and inspect datasets (TFDS ArrayRecord)",
        description="Build DeformPAM-layout sample folders into TFDS ArrayRecord datasets, "
                    "inspect them, or write a small fixture dataset.")
    sub = p.add_subparsers(dest="data_command", metavar="{build,inspect,fixture,export-parquet}")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    b = sub.add_parser(
        "build", help="build a dataset from sample folders",
        description="Build deformpam/<task>_<kind> (ArrayRecord) from folders in the DeformPAM "
                    "layout (<src>/<sample>/metadata.yaml, annotation.yaml, observations/...). "
                    "Malformed samples are skipped and listed (or fatal with --strict); episodes "
                    "are split 8:1:1 into train/validation/test.")
    b.add_argument("builder", choices=["deformpam"], help="dataset family")
    b.add_argument("--src", required=True, help="folder holding the sample folders")
    b.add_argument("--task", required=True, choices=tasks, help="task (fixes the primitive)")
    b.add_argument("--kind", required=True, choices=list(tasks_lib.KINDS),
                   help="supervised (annotated actions) or finetune (candidates + rankings)")
    b.add_argument("--data-dir", default=None, help="TFDS data dir (default ~/tensorflow_datasets)")
    b.add_argument("--strict", action="store_true", help="fail on the first malformed sample")
    b.add_argument("--split-seed", type=int, default=0, help="seed of the episode split (default 0)")
    b.add_argument("--overwrite", action="store_true", help="rebuild an existing dataset")
    b.add_argument("--no-progress", action="store_true", help="no progress bars")
    b.add_argument("-v", "--verbose", action="store_true", help="more log output")
    b.set_defaults(func=cmd_build)

    i = sub.add_parser(
        "inspect", help="counts, field shapes and a PNG of a built dataset",
        description="Print split sizes, skipped samples, per-field shapes, action types and "
                    "normalisation statistics; render a PNG of a few samples seen from above "
                    "(cloud, action points, annotated alternatives, candidates).")
    _built_dataset_args(i, tasks, "open")
    i.add_argument("--split", default="train", help="split to summarise and draw (default train)")
    i.add_argument("--num", type=int, default=4, help="samples to draw (0: no PNG)")
    i.add_argument("--png", default=None, help="output PNG (default ./deformpam_<task>_<kind>_<split>.png)")
    i.add_argument("--augment", action="store_true", help="draw augmented samples")
    i.add_argument("--max-records", type=int, default=2000, help="records read for the field summary")
    i.add_argument("--json", action="store_true", help="also print a JSON summary")
    i.add_argument("-v", "--verbose", action="store_true", help="more log output")
    i.set_defaults(func=cmd_inspect)

    f = sub.add_parser(
        "fixture", help="write a small dataset in the published layout",
        description="Write a few synthetic episodes in the exact DeformPAM sample layout "
                    "(for trying the builder and the pipeline).")
    f.add_argument("--out", required=True, help="folder to write the samples to")
    f.add_argument("--task", choices=tasks, default="rope")
    f.add_argument("--kind", choices=list(tasks_lib.KINDS), default="supervised")
    f.add_argument("--episodes", type=int, default=10)
    f.add_argument("--malformed", nargs="*", default=["missing_npz"],
                   help="broken samples to add (missing_npz unreadable_npz missing_key bad_shape "
                        "no_annotation bad_indices)")
    f.add_argument("--seed", type=int, default=0)
    f.set_defaults(func=cmd_fixture)

    e = sub.add_parser(
        "export-parquet", help="write a built dataset as Parquet (one file per split)",
        description="Write each split of a built dataset to OUT/<split>.parquet, one row per "
                    "record, arrays as nested lists (Hugging Face datasets, pandas and polars read "
                    "it). Needs pyarrow: pip install 'pam_jax[parquet]'.")
    _built_dataset_args(e, tasks, "export")
    e.add_argument("--out", required=True, help="folder for the Parquet files")
    e.add_argument("--split", action="append", default=None,
                   help="a split to export (repeatable; default: every split)")
    e.add_argument("--overwrite", action="store_true", help="replace existing Parquet files")
    e.add_argument("-v", "--verbose", action="store_true", help="more log output")
    e.set_defaults(func=cmd_export_parquet)
    return p


def _built_dataset_args(parser, tasks, verb: str) -> None:
    """--data-dir, --task, --kind: the options that name a built dataset."""
    parser.add_argument("--data-dir", default=None,
                        help="TFDS data dir (with --task), or a built dataset folder")
    parser.add_argument("--task", choices=tasks, default=None, help=f"task of the dataset to {verb}")
    parser.add_argument("--kind", choices=list(tasks_lib.KINDS), default="supervised")
