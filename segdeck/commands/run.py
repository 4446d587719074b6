"""``segdeck run JOB INPUT [--out DIR] [--preset NAME] [--config FILE] [--set k=v] [--<param> v]``

Every job's options are generated from its params model (dotted names for nested
sections). Progress is a rich progress bar (or JSON lines with ``--events``);
Ctrl+C (or SIGTERM, which the TUI sends) stops after the current item.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from segdeck.commands import err_console, fail

_SKIP = object()


def add_parser(sub) -> None:
    from segdeck.core.jobs.registry import JOBS, get_job_class
    from segdeck.core.params import field_specs

    p = sub.add_parser("run", help="run a batch job over a folder of images")
    jobs = p.add_subparsers(dest="job", metavar="JOB", required=True)
    for name in JOBS:
        try:
            cls = get_job_class(name)
        except ImportError:
            continue
        jp = jobs.add_parser(name, help=cls.description, description=cls.description)
        jp.add_argument("input", metavar="INPUT", help="folder of images (searched recursively) or one image")
        jp.add_argument("--out", metavar="DIR", help="output root (default: a sibling folder INPUT.segdeck)")
        jp.add_argument("--preset", metavar="NAME", help="named parameter preset")
        jp.add_argument("--config", metavar="FILE", help="TOML file with parameters (a job.toml works)")
        jp.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="sets",
                        help="set a parameter by dotted name (repeatable)")
        jp.add_argument("--events", action="store_true", help="print events as JSON lines instead of a progress bar")
        jp.add_argument("--skip-failed", action="store_true", help="do not retry items that failed in an earlier run")
        group = jp.add_argument_group("parameters")
        for spec in field_specs(cls.Params):
            flag = "--" + spec.name.replace("_", "-")
            help_txt = spec.description or spec.name
            rng = []
            if spec.ge is not None or spec.gt is not None:
                rng.append(f">= {spec.ge}" if spec.ge is not None else f"> {spec.gt}")
            if spec.le is not None or spec.lt is not None:
                rng.append(f"<= {spec.le}" if spec.le is not None else f"< {spec.lt}")
            if rng:
                help_txt += f" [{', '.join(rng)}]"
            help_txt += f" (default: {spec.default})"
            kwargs = dict(dest=f"param:{spec.name}", default=_SKIP, help=help_txt.replace("%", "%%"))
            if spec.kind == "bool":
                group.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
            elif spec.kind == "choice":
                group.add_argument(flag, choices=[str(c) for c in spec.choices], **kwargs)
            else:
                group.add_argument(flag, metavar=spec.kind.upper(), **kwargs)
        jp.set_defaults(func=run, job_name=name)


def run(args) -> int:
    from rich.markup import escape

    from segdeck.core.errors import SegdeckError
    from segdeck.core.jobs.registry import get_job_class
    from segdeck.core.jobs.runner import job_dir_for, run_job
    from segdeck.core.params import parse_scalar, resolve

    cls = get_job_class(args.job_name)
    overrides = {}
    for key, value in vars(args).items():
        if key.startswith("param:") and value is not _SKIP:
            overrides[key[len("param:"):]] = parse_scalar(value) if isinstance(value, str) else value
    input_path = Path(args.input)
    if not input_path.exists():
        return fail(f"input {input_path} does not exist")
    if input_path.is_dir():
        from segdeck.core.imageio import discover

        if not discover(input_path):  # a typo'd folder must not end as "done: 0 done"
            return fail(f"{input_path}: no images (png, jpg, jpeg, tif, tiff) in this folder or below")
    try:
        params = resolve(cls.Params, cls.name, preset=args.preset, config=args.config, sets=args.sets, overrides=overrides)
    except SegdeckError as exc:
        return fail(f"bad parameters: {exc}")
    job_dir = job_dir_for(cls, params, input_path, args.out)
    job = cls(params, input_path, job_dir)
    cancel = threading.Event()

    def on_signal(signum, frame):
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()
        err_console.print("[yellow]stopping after the current item (Ctrl+C again to abort)[/]")

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    sink, close = (_json_sink() if args.events else _rich_sink(cls.name))
    try:
        summary = run_job(job, sink=sink, cancel=cancel, retry_failed=not args.skip_failed)
    except SegdeckError as exc:
        close()
        return fail(str(exc))
    except OSError as exc:  # the job folder cannot be created or written (--out on a read-only disk)
        close()
        return fail(f"cannot write the job folder {job_dir}: {exc.strerror or exc}")
    close()
    if summary.status == "error":
        return fail(summary.error or "the job could not start")
    colour = {"done": "green", "failed": "yellow", "cancelled": "yellow"}.get(summary.status, "red")
    err_console.print(
        f"[{colour}]{summary.status}[/]: {summary.done} done, {summary.failed} failed, "
        f"{summary.skipped} already done, {summary.seconds:.1f} s -> {escape(str(summary.job_dir))}"
    )
    return summary.exit_code


def _json_sink():
    from segdeck.core.jobs.events import event_to_json

    def sink(event):
        sys.stdout.write(event_to_json(event) + "\n")
        sys.stdout.flush()

    return sink, lambda: None


def _rich_sink(job_name: str):
    from rich.markup import escape
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from segdeck.core.jobs.events import ItemDone, ItemFailed, JobStarted, Message
    from segdeck.core.jobs.events import Progress as ProgressEvent

    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[note]}"),
        console=err_console, transient=False,
    )
    progress.start()
    state: dict = {"task": None, "sub": {}}

    def sink(event):
        if isinstance(event, JobStarted):
            state["task"] = progress.add_task(job_name, total=event.todo, note="")
        elif isinstance(event, ItemDone) and state["task"] is not None:
            progress.update(state["task"], advance=1, note=escape(event.item[-40:]))
        elif isinstance(event, ItemFailed):
            text = event.error if event.item in event.error else f"{event.item}: {event.error}"
            progress.console.print(f"[red]failed[/] {escape(text)}", soft_wrap=True)
            if state["task"] is not None:
                progress.update(state["task"], advance=1)
        elif isinstance(event, Message):
            style = {"warning": "yellow", "error": "red"}.get(event.level, "dim")
            progress.console.print(f"[{style}]{escape(event.text)}[/]", soft_wrap=True)
        elif isinstance(event, ProgressEvent):
            tid = state["sub"].get(event.what)
            if tid is None:
                tid = state["sub"][event.what] = progress.add_task(event.what, total=event.total, note="")
            progress.update(tid, completed=event.done, total=event.total)

    return sink, progress.stop
