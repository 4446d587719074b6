"""``segdeck annotate {paint,grabcut,sam} FOLDER|IMAGE ...`` and ``segdeck annotate refs SPEC``:
hands-on annotation windows.

Saved files are reported as JSON lines on stdout (one object per file); messages go to
stderr. Exit codes: 0 done, 1 some image could not be loaded or saved, 2 bad usage,
no display, or no SAM model.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from segdeck.commands import err_console, fail

MODES = {
    "paint": "paint over-segmented images: fill segments with colours, cut, undo, template painting",
    "grabcut": "GrabCut with rectangle and strokes, then paint the result",
    "sam": "SAM point / box prompts, then paint the result",
    "refs": "label the reference images of a propagation project (SAM candidate masks, object IDs)",
}


def add_parser(sub) -> None:
    p = sub.add_parser("annotate", help="annotate images in OpenCV windows (paint segments, GrabCut, SAM)",
                       description=__doc__.split("\n\n")[0].replace("``", ""))
    modes = p.add_subparsers(dest="mode", metavar="MODE", required=True)
    for mode, help_txt in MODES.items():
        mp = modes.add_parser(mode, help=help_txt, description=help_txt)
        if mode == "refs":
            _add_refs_options(mp)
            continue
        mp.add_argument("input", metavar="FOLDER|IMAGE", nargs="?" if mode == "paint" else None,
                        help="an image, or a folder searched recursively")
        if mode == "paint":
            mp.add_argument("--method", default="slic", metavar="M",
                            help="segment source: an over-segmentation method (see `segdeck annotate paint "
                                 "--list-methods`), or grabcut, sam (interactive) or sam-auto (default: slic)")
            mp.add_argument("--list-methods", action="store_true", help="list the segment sources and exit")
            # grabcut and sam take no parameters: only paint's segment methods have --set
            mp.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="sets",
                            help="a parameter of the segment method (repeatable), e.g. --set region_size=30 "
                                 "for slic; `segdeck run segment --help` lists every method's parameters")
        if mode in ("paint", "sam"):
            mp.add_argument("--model", default=None, metavar="NAME",
                            help="SAM model for sam / sam-auto (see `segdeck models`; default sam2.1-tiny)")
            mp.add_argument("--checkpoint", default=None, metavar="FILE",
                            help="fine-tuned weights of --model's family and size instead of the official ones")
        mp.add_argument("--out", metavar="DIR", help="annotation folder (default: INPUT.segdeck/annotate-<method>)")
        mp.add_argument("--keymap", default="default", metavar="NAME",
                        help="keymap: default, xanylabeling or a .toml path (plus your keymap.toml, see `segdeck keys`)")
        mp.add_argument("--max-window", default=None, metavar="WxH",
                        help="largest window in screen pixels (default 1280x800, less on a smaller screen: "
                             "the screen size less 16x80 for frames and panels; zoom for detail)")
        mp.add_argument("--max-side", type=int, default=1024, metavar="PX",
                        help="longest side the segmentation / GrabCut / SAM work at (default 1024; masks are "
                             "saved at full resolution)")
        if mode == "paint":
            g = mp.add_argument_group("template painting (key t)")
            g.add_argument("--template", metavar="FILE", help="template image to look for")
            g.add_argument("--attention", metavar="FILE", help="which template pixels count (white); default: "
                           "the template's alpha, else its non-black pixels")
            g.add_argument("--segment", metavar="FILE", help="what to paint at each match (default: the template)")
            g.add_argument("--template-mask", metavar="FILE", help="which segment pixels to paint (white); "
                           "default: the segment's alpha, else its non-black pixels")
            g.add_argument("--threshold", type=float, default=0.9, metavar="F",
                           help="minimum match score 0..1, normalised correlation coefficient (TM_CCOEFF_NORMED: "
                                "plain background scores about 0; default 0.9)")
        mp.add_argument("--frames-log", metavar="FILE", help=argparse.SUPPRESS)
        mp.set_defaults(func=run)


def _add_refs_options(mp) -> None:
    mp.add_argument("input", metavar="SPEC", help="the project spec (TOML) of `segdeck run propagate`")
    mp.add_argument("--model", default=None, metavar="NAME",
                    help="SAM model for the candidate masks and point prompts (default: the spec's model)")
    mp.add_argument("--checkpoint", default=None, metavar="FILE",
                    help="fine-tuned weights of --model's family and size instead of the official ones")
    mp.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="sets",
                    help="a parameter of SAM's automatic mask generator (repeatable), e.g. --set points_per_side=16")
    mp.add_argument("--keymap", default="default", metavar="NAME",
                    help="keymap: default, xanylabeling or a .toml path (plus your keymap.toml, see `segdeck keys`)")
    mp.add_argument("--max-window", default=None, metavar="WxH",
                    help="largest window in screen pixels (default 1280x800, less on a smaller screen)")
    mp.add_argument("--max-side", type=int, default=1024, metavar="PX",
                    help="longest side the candidates and prompts work at (default 1024; label maps are saved "
                         "at the image's full size)")
    mp.add_argument("--frames-log", metavar="FILE", help=argparse.SUPPRESS)
    mp.set_defaults(func=run_refs)


def run_refs(args) -> int:
    """``segdeck annotate refs SPEC``: the reference-labelling window over a project."""
    from segdeck.annotate.gui import check_display, default_max_window, parse_size
    from segdeck.annotate.keymap import KeymapError, load_keymap
    from segdeck.core.errors import SegdeckError

    try:
        from segdeck.core.propagate import load_project

        project = load_project(args.input)
        params = _params("sam-auto", args.sets)
        max_window = parse_size(args.max_window) if args.max_window else None
        keymap = load_keymap(args.keymap)
    except (SegdeckError, ValueError, KeymapError) as exc:
        return fail(str(exc))
    if not 64 <= args.max_side <= 16384:
        return fail(f"--max-side {args.max_side} out of range 64..16384")
    for line in keymap.conflicts() + keymap.qt_unreachable():
        err_console.print(f"[yellow]warning:[/] {line}", highlight=False, soft_wrap=True)
    if project.missing:
        err_console.print(f"[yellow]warning:[/] {project.missing_text()}", highlight=False, soft_wrap=True)
    from segdeck.annotate.refs import ProjectRefs
    from segdeck.annotate.refs import run_refs as run_window

    refs = ProjectRefs(project)
    try:
        n = len(refs.references())
    except (SegdeckError, ValueError) as exc:
        return fail(str(exc))
    if n == 0:
        return fail(f"{args.input}: no group has an existing image under {project.root}")
    try:
        check_display()
    except SegdeckError as exc:
        return fail(str(exc))
    model = args.model or project.spec.model
    err_console.print(f"loading SAM model {model} ...", highlight=False)
    engine = _open_engine(model, args.checkpoint)
    if isinstance(engine, int):
        return engine
    err_console.print(f"{n} reference(s) in {len(project.groups)} group(s); saving to {project.refs_dir}",
                      highlight=False, soft_wrap=True)
    return run_window(refs, engine, params=params, max_side=args.max_side,
                      max_window=max_window or default_max_window(), keymap=keymap,
                      frames_log=Path(args.frames_log) if args.frames_log else None)


def _params(method: str, sets: list[str]):
    from segdeck.core.params import parse_scalar, set_dotted

    data: dict = {}
    for item in sets:
        if "=" not in item:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        set_dotted(data, k.strip(), parse_scalar(v.strip()))
    if method in ("grabcut", "sam"):
        if data:
            raise ValueError(f"method {method} takes no --set parameters")
        return None
    if method == "sam-auto":
        from segdeck.core.sam.params import GeneratorParams

        model = GeneratorParams
    else:
        from segdeck.core.oversegment import params_model

        model = params_model(method)
    from segdeck.core.params import validate

    return validate(model, data)


def run(args) -> int:
    from rich.markup import escape

    from segdeck.annotate.app import INTERACTIVE_METHODS, SAM_AUTO, Options, run_annotate
    from segdeck.annotate.gui import check_display, default_max_window, parse_size
    from segdeck.annotate.keymap import KeymapError, load_keymap
    from segdeck.core import imageio
    from segdeck.core.errors import SegdeckError
    from segdeck.core.jobs.base import default_output_root
    from segdeck.core.oversegment import method_names

    mode = args.mode
    method = getattr(args, "method", None) or mode
    methods = method_names() + list(INTERACTIVE_METHODS) + [SAM_AUTO]
    if getattr(args, "list_methods", False):
        print("\n".join(methods))
        return 0
    if args.input is None:
        return fail("give a FOLDER or IMAGE to annotate")
    if method not in methods:
        return fail(f"unknown segment source {method!r}; known: {', '.join(methods)}")
    try:
        params = _params(method, getattr(args, "sets", []))
        max_window = parse_size(args.max_window) if args.max_window else None
    except (SegdeckError, ValueError) as exc:
        return fail(str(exc))
    if not 64 <= args.max_side <= 16384:
        return fail(f"--max-side {args.max_side} out of range 64..16384")
    try:
        keymap = load_keymap(args.keymap)
    except KeymapError as exc:
        return fail(str(exc))
    for line in keymap.conflicts() + keymap.qt_unreachable():
        err_console.print(f"[yellow]warning:[/] {line}", highlight=False, soft_wrap=True)
    src = Path(args.input)
    try:
        paths = imageio.discover(src)
    except FileNotFoundError as exc:
        return fail(str(exc))
    if not paths:
        return fail(f"{src}: no images (png, jpg, jpeg, tif, tiff)")
    template = None
    if getattr(args, "template", None):
        from segdeck.annotate.template import load_spec

        try:
            template = load_spec(args.template, args.segment, args.attention, args.template_mask,
                                 threshold=args.threshold)
        except (SegdeckError, ValueError) as exc:
            return fail(str(exc))
    try:
        check_display()
    except SegdeckError as exc:
        return fail(str(exc))
    if max_window is None:
        max_window = default_max_window()
    engine = None
    if method in ("sam", SAM_AUTO):
        err_console.print(f"loading SAM model {getattr(args, 'model', None) or 'sam2.1-tiny'} ...", highlight=False)
        engine = _open_engine(getattr(args, "model", None), getattr(args, "checkpoint", None))
        if isinstance(engine, int):
            return engine
    out_dir = Path(args.out) if args.out else default_output_root(src) / f"annotate-{method}"
    opts = Options(method=method, params=params, out_dir=out_dir, root=src,
                   max_side=args.max_side, max_window=max_window, keymap=keymap, template=template,
                   engine=engine, frames_log=Path(args.frames_log) if args.frames_log else None)
    err_console.print(f"annotating {len(paths)} image(s) with {method}; saving to {escape(str(out_dir))}", highlight=False,
                      soft_wrap=True)
    return run_annotate(paths, opts)


def _open_engine(model: str | None, checkpoint: str | None = None):
    """The SAM engine, or an exit code after one clear line.

    ``checkpoint``: fine-tuned weights of the model's family and size (strict key and
    shape check; nothing is downloaded).

    A model that is not cached is downloaded first (progress on stderr), as ``segdeck run
    automask`` does; offline the line says why (no connection, HTTP status) and names the
    URL and the ``segdeck models import`` command.
    """
    name = model or "sam2.1-tiny"
    try:
        from segdeck.core.sam import open_engine
    except ImportError as exc:
        return fail(f"the SAM engine is not available ({exc}); install segdeck[sam]")
    from segdeck.commands.models import _progress_sink
    from segdeck.core.errors import SegdeckError
    from segdeck.core.models import model_path

    try:
        if checkpoint is None and model_path(name) is None:
            err_console.print(f"model {name} is not cached: downloading", highlight=False)
        sink, stop = _progress_sink()
        try:
            return open_engine(name, checkpoint=checkpoint, emit=sink)
        finally:
            stop()
    except SegdeckError as exc:
        return fail(f"{exc} (or pick another model with --model)")
    except (ImportError, ValueError, KeyError) as exc:
        return fail(f"cannot open SAM model {name}: {exc}")
