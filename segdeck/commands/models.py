"""``segdeck models list | download NAME | import NAME FILE | verify [NAME]``

Model weights live in the segdeck model cache (``$SEGDECK_MODEL_DIR`` or the platform
cache folder). ``download`` streams with a progress bar, resumes a partial file and
checks the sha256 before the file enters the cache; on a machine without internet
fetch the URL by hand and use ``import``.
"""

from __future__ import annotations

from segdeck.commands import err_console, fail


def add_parser(sub) -> None:
    p = sub.add_parser("models", help="list, download, import and verify model weights",
                       description="Manage the model cache (SAM 2.1, SAM-HQ and feature backbones).")
    msub = p.add_subparsers(dest="models_cmd", metavar="ACTION", required=True)
    lp = msub.add_parser("list", help="registered models, cache state, size and path")
    lp.add_argument("--family", help="only this family (sam2, sam-hq, ...)")
    lp.set_defaults(func=run_list)
    dp = msub.add_parser("download", help="download NAME into the cache (resumable, sha256 verified)")
    dp.add_argument("name", metavar="NAME")
    dp.add_argument("--force", action="store_true",
                    help="download again even if cached (or held by an installed package)")
    dp.set_defaults(func=run_download)
    ip = msub.add_parser("import", help="verify FILE (fetched by hand) and copy it into the cache as NAME")
    ip.add_argument("name", metavar="NAME")
    ip.add_argument("file", metavar="FILE")
    ip.set_defaults(func=run_import)
    vp = msub.add_parser("verify", help="re-check the sha256 of NAME (default: every cached model)")
    vp.add_argument("name", metavar="NAME", nargs="?")
    vp.set_defaults(func=run_verify)


def _register_all() -> None:
    """Models registered outside core.models (the clustering backbones), so that list,
    download, import and verify know the names the jobs' messages tell users to use."""
    from segdeck.core.cluster.deep import register_backbones

    register_backbones()


def _size(n: int | None, exact: bool = True) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            txt = f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
            return txt if exact else f"~{txt}"
        n /= 1000
    return str(n)


def run_list(args) -> int:
    _register_all()
    from rich.console import Console
    from rich.table import Table

    from segdeck.core.models import cache_dir, list_models, package_file

    rows = list_models(args.family)
    if not rows:
        return fail(f"no models of family {args.family!r}")
    table = Table(box=None, header_style="bold", title=f"model cache: {cache_dir()}", title_justify="left")
    for col in ("name", "family", "cached", "size", "description", "path"):
        table.add_column(col, no_wrap=col not in ("path", "description"), overflow="fold")
    in_package = False
    for spec, cached, path in rows:
        size = _size(spec.display_bytes, exact=spec.bytes is not None)
        packaged = None if cached else package_file(spec)
        state = "[green]yes[/]" if cached else "[yellow]package[/]" if packaged else "[dim]no[/]"
        in_package |= packaged is not None
        table.add_row(spec.name, spec.family, state, size, spec.description,
                      str(path) if cached else str(packaged) if packaged else "")
    console = Console()
    console.print(table)
    if in_package:
        console.print("package: the file is inside an installed Python package (no network needed); the first "
                      "run that uses it, or `segdeck models download NAME`, checks it and copies it into the cache")
    return 0


def _progress_sink():
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    from segdeck.core.jobs.events import Progress as ProgressEvent

    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(),
                        TransferSpeedColumn(), TimeRemainingColumn(), console=err_console, transient=False)
    tasks: dict[str, int] = {}

    def sink(event) -> None:
        if isinstance(event, ProgressEvent):
            if not tasks:
                progress.start()
            tid = tasks.get(event.what)
            if tid is None:
                tid = tasks[event.what] = progress.add_task(event.what, total=event.total)
            progress.update(tid, completed=event.done, total=event.total)

    return sink, progress.stop


def run_download(args) -> int:
    _register_all()
    from segdeck.core.errors import SegdeckError
    from segdeck.core.models import download, get_spec, import_file, model_path, package_file

    try:
        spec = get_spec(args.name)
        if not args.force and model_path(args.name) is not None:
            err_console.print(f"{args.name} is already cached: {model_path(args.name)}")
            return 0
        # weights inside an installed package: copied from there (checked), no network;
        # --force downloads them all the same
        packaged = None if args.force else package_file(spec)
        sink, stop = _progress_sink()
        try:
            path = import_file(args.name, packaged, sink) if packaged else download(args.name, sink)
        finally:
            stop()
    except SegdeckError as exc:
        return fail(str(exc))
    if packaged:
        err_console.print(f"[green]imported[/] {args.name} from the installed package {spec.extra['package']} "
                          f"({packaged}) -> {path}")
    else:
        err_console.print(f"[green]downloaded[/] {args.name} -> {path}")
    return 0


def run_import(args) -> int:
    _register_all()
    from segdeck.core.errors import SegdeckError
    from segdeck.core.models import import_file

    try:
        path = import_file(args.name, args.file)
    except SegdeckError as exc:
        return fail(str(exc))
    err_console.print(f"[green]imported[/] {args.name} -> {path}")
    return 0


def _packaged_only(name: str):
    """The file of ``name`` inside an installed package when the cache has none, else None."""
    from segdeck.core.models import get_spec, model_path, package_file

    return None if model_path(name) is not None else package_file(get_spec(name))


def run_verify(args) -> int:
    _register_all()
    from segdeck.core.errors import SegdeckError
    from segdeck.core.models import check_file, get_spec, list_models, verify

    if args.name:
        try:
            get_spec(args.name)
        except SegdeckError as exc:
            return fail(str(exc))
        names = [args.name]
    else:
        names = [spec.name for spec, cached, _ in list_models() if cached]
        if not names:
            err_console.print("no cached models to verify")
            return 0
    bad = 0
    for name in names:
        try:
            packaged = _packaged_only(name)
            path = packaged or verify(name)
            if packaged:  # not cached yet: the file the first run would copy in is checked
                check_file(get_spec(name), packaged)
        except SegdeckError as exc:
            fail(str(exc))
            bad += 1
            continue
        spec = get_spec(name)
        if spec.folder:  # a repository folder: its files are checked for, not hashed
            err_console.print(f"[green]ok[/] {name}: config.json and weight files present, not hashed ({path})")
            continue
        how = "sha256" if spec.full_hash else f"sha256 prefix ({len(spec.sha256)} hex digits)"
        where = f"in the installed package {spec.extra['package']}, not in the cache yet: " if packaged else ""
        err_console.print(f"[green]ok[/] {name}: {how} matches ({where}{path})")
    return 1 if bad else 0
