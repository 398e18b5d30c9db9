"""`virnucpro models fetch|list|verify|convert`: the model store on the command line."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path

from virnucpro.errors import ModelError
from virnucpro.store.catalog import StoreLocations, load_catalog
from virnucpro.store.fetch import expected_sum, fetch_models, file_status, find_in_place, parse_pins
from virnucpro.store.lockfile import Lock, sha256_file, verify_file


def register(subparsers) -> None:
    catalog = load_catalog()
    names = ", ".join([*catalog.groups, *(m.key for m in catalog.models)])
    parser = subparsers.add_parser("models", help="fetch, list, verify and convert the model weights")
    commands = parser.add_subparsers(dest="models_command", metavar="ACTION", required=True)

    fetch = commands.add_parser("fetch", help="download models (resumable, sha256-checked)")
    fetch.add_argument("names", nargs="*", default=["default"], help=f"models or groups (default: default): {names}")
    fetch.add_argument("--mirror", action="append", default=[],
                       help="URL serving every source as URL/<source>/..., or SOURCE=URL for one source "
                            "(sources: " + ", ".join(catalog.sources) + "); also VIRNUCPRO_MODELS_MIRROR")
    fetch.add_argument("--attempts", type=int, default=4, help="tries per file before giving up (resumes each time)")
    _pin_options(fetch)
    fetch.set_defaults(handler=run_fetch)

    listing = commands.add_parser("list", help="what is present, where, and how big")
    listing.set_defaults(handler=run_list)

    verify = commands.add_parser("verify", help="re-hash every present model file against the lock and pins")
    verify.add_argument("names", nargs="*", default=["all"], help="models or groups (default: all)")
    _pin_options(verify)
    verify.set_defaults(handler=run_verify)

    convert = commands.add_parser("convert", help="ESM-2 .pt -> .safetensors (memory-mapped, no pickle)")
    convert.add_argument("names", nargs="*", help="ESM-2 models in the store (default: every one present)")
    convert.add_argument("--pt", type=Path, help="convert this .pt instead (written beside it)")
    convert.set_defaults(handler=run_convert)

    for sub in (fetch, listing, verify, convert):
        sub.add_argument("--dir", type=Path, help="models directory (default: $VIRNUCPRO_MODELS or "
                                                  "~/.cache/virnucpro/models)")


def _pin_options(parser) -> None:
    parser.add_argument("--sha256", action="append", default=[], metavar="NAME=HEX",
                        help="expected sum of a file (file name, folder/name or model key); repeatable")
    parser.add_argument("--pins", type=Path, help="file of pinned sums in `sha256sum` format (HEX  NAME)")


def _locations(args, env) -> StoreLocations:
    return StoreLocations.from_environ(args.dir or env.models_dir, env=env.store_environ,
                                       mirrors=getattr(args, "mirror", []))


def run_fetch(args, env) -> int:
    locations = _locations(args, env)
    models = load_catalog().select(args.names)
    pins = parse_pins(args.sha256, args.pins)
    with _progress(env) as factory:
        outcomes = fetch_models(models, locations, pins, factory, attempts=args.attempts)
    for outcome in outcomes:
        print(f"{outcome.status:>18}  {outcome.key}  {outcome.path}")
    return 0


def run_list(args, env) -> int:
    from rich.console import Console
    from rich.table import Table

    locations = _locations(args, env)
    lock = Lock.load(locations.models_dir)
    table = Table(title=f"models in {locations.models_dir}")
    for column in ("model", "file", "status", "size", "where"):
        table.add_column(column, overflow="fold")
    for model in load_catalog().models:
        for file in model.files:
            table.add_row(model.key, file.name, *file_status(model, file, locations, lock))
    Console().print(table)
    return 0


def run_verify(args, env) -> int:
    locations = _locations(args, env)
    lock = Lock.load(locations.models_dir)
    pins = parse_pins(args.sha256, args.pins)
    failures = checked = 0
    for model in load_catalog().select(args.names):
        for file in model.files:
            found = find_in_place(model, file, locations)
            if found is None:
                continue
            checked += 1
            try:
                status = verify_file(found, lock, model.relpath(file, found.name),
                                     expected=expected_sum(model, file, pins, lock), full=True)
                print(f"{status:>9}  {found}")
            except ModelError as error:
                failures += 1
                print(f"MISMATCH  {error}", file=sys.stderr)
    failures += _verify_converted(locations, lock)
    lock.save_if_dirty()
    if failures:
        print(f"virnucpro: {failures} model file(s) failed verification", file=sys.stderr)
        return ModelError.exit_code
    print(f"{checked} model file(s) verified in {locations.models_dir}")
    return 0


def _verify_converted(locations: StoreLocations, lock: Lock) -> int:
    failures = 0
    for path in sorted((locations.models_dir / "esm2").glob("*.safetensors")):
        try:
            print(f"{verify_file(path, lock, full=True):>9}  {path}")
        except ModelError as error:
            failures += 1
            print(f"MISMATCH  {error}", file=sys.stderr)
    return failures


def run_convert(args, env) -> int:
    from virnucpro.store.convert import convert_esm2, esm_checkpoints_to_convert  # imports torch: only here

    locations = _locations(args, env)
    lock = Lock.load(locations.models_dir)
    if args.pt:
        jobs = [(args.pt, args.pt.with_suffix(".safetensors"))]
    else:  # into the store even when the .pt lives in torch hub: resolve looks for it there
        jobs = [(pt, locations.models_dir / "esm2" / pt.with_suffix(".safetensors").name)
                for pt in esm_checkpoints_to_convert(args.names, locations, lock)]
    for pt, out in jobs:
        convert_esm2(pt, out)
        if out.parent == locations.models_dir / "esm2":
            lock.record(lock.key_for(out), out, sha256_file(out))
        print(f"converted  {pt} -> {out}")
    lock.save_if_dirty()
    return 0


@contextmanager
def _progress(env):
    """A rich progress bar per file on a terminal; nothing in batch logs (SLURM output files)."""
    if env.no_progress or not sys.stderr.isatty():
        yield None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  transient=False) as bar:
        def factory(file):
            task = bar.add_task(file.name, total=file.approx_bytes)
            return lambda done, total: bar.update(task, completed=done, total=total or file.approx_bytes)

        yield factory
