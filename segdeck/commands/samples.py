"""``segdeck samples DIR``: write sample photos (from scikit-image and scikit-learn) and
odd files made from them (EXIF-rotated JPEG, 16-bit TIFF, gray PNG, RGBA PNG, a
nested folder with a space and a non-ASCII name). Idempotent."""

from __future__ import annotations

from pathlib import Path

from segdeck.commands import err_console, fail


def add_parser(sub) -> None:
    p = sub.add_parser("samples", help="write sample photos (and odd image files) into a folder")
    p.add_argument("dir", metavar="DIR", help="folder to write into (created if needed)")
    p.add_argument("--overwrite", action="store_true", help="rewrite files that already exist")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the summary line")
    p.set_defaults(func=run)


def run(args) -> int:
    from rich.markup import escape

    from segdeck.core.samples import write_samples

    dest = Path(args.dir)
    if dest.exists() and not dest.is_dir():
        return fail(f"{dest} exists and is not a folder")
    try:
        results = write_samples(dest, overwrite=args.overwrite)
    except OSError as exc:
        return fail(f"cannot write samples into {dest}: {exc.strerror or exc}")
    written = sum(1 for _, w in results if w)
    if not args.quiet:
        for sample, was_written in results:
            state = "[green]wrote[/]" if was_written else "[dim]kept [/]"
            err_console.print(f"{state} {sample.name}  [dim]({sample.kind}: {sample.source})[/]", soft_wrap=True)
    err_console.print(f"{len(results)} sample files in {escape(str(dest))} ({written} written, {len(results) - written} already there)")
    return 0
