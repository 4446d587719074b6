"""``segdeck export FORMAT JOB_DIR [--out DIR]``: write a finished job's results in a
format other tools open as they are (COCO, Datumaro / CVAT, labelme / X-AnyLabeling,
YOLO segmentation, plain label maps).

Works on ``segment`` and ``automask`` job folders and on ``annotate`` folders. The
export folder (default ``JOB_DIR/export/FORMAT``) is printed on stdout as the last line.
"""

from __future__ import annotations

from segdeck.commands import fail

#: kept in step with segdeck.core.export.FORMATS (checked by tests/test_export_cli.py);
#: listed here so ``segdeck --help`` imports nothing from the engine
FORMAT_NAMES = ("coco", "datumaro-coco", "labelme", "yolo-seg", "masks")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "export", help="write a finished job's results as COCO, Datumaro/CVAT, labelme, YOLO-seg or label maps",
        description="Export a finished segment / automask job folder or an annotate folder for another tool. "
                    "Prints the export folder as the last line.",
    )
    p.add_argument("format", metavar="FORMAT", choices=FORMAT_NAMES,
                   help="one of: " + ", ".join(FORMAT_NAMES))
    p.add_argument("job_dir", metavar="JOB_DIR", help="job folder (segment, automask) or annotate folder")
    p.add_argument("--out", metavar="DIR", help="export folder (default: JOB_DIR/export/FORMAT)")
    p.add_argument("--polygons", action="store_true",
                   help="coco, datumaro-coco: polygons (pixel-edge outlines) instead of RLE")
    p.add_argument("--uint8", action="store_true",
                   help="masks: 8-bit label maps (fails for an image with more than 255 labels; default 16-bit)")
    p.add_argument("--images", action="store_true",
                   help="datumaro-coco: copy the images into images/default/ and the zip")
    p.set_defaults(func=run)


def run(args) -> int:
    import sys

    from segdeck.core.errors import SegdeckError
    from segdeck.core.export import export_job

    try:
        dest = export_job(
            args.format, args.job_dir, args.out, segmentation="polygons" if args.polygons else "rle",
            mask_dtype="uint8" if args.uint8 else "uint16", images=args.images,
        )
    except SegdeckError as exc:
        return fail(str(exc))
    except OSError as exc:
        return fail(f"cannot write the export: {exc.strerror or exc}")
    sys.stdout.write(f"{dest}\n")
    return 0
