"""``segdeck run JOB INPUT [--out DIR] [--preset NAME] [--config FILE] [--set k=v] [--<param> v]``

Every job's options are generated from its params model (dotted names for nested
sections). Progress is a rich progress bar on stderr (or JSON lines on stdout with
``--events``); Ctrl+C (or SIGTERM, which the TUI sends) stops after the current item.

The last stdout line is for scripts and never wrapped: the job folder
(``dir=$(segdeck run segment photos | tail -1)``), or with ``--json`` a summary object
(``job_dir``, ``status``, ``exit_code``, counts). With ``--events`` alone stdout holds
only the JSON event lines.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

from segdeck.commands import err_console, fail

_SKIP = object()


class _OneLineErrors(argparse.ArgumentParser):
    """The parser of ``segdeck run JOB``: a usage error is one line on stderr (exit code
    2), not argparse's usage block, which for a job with many parameters (``cluster``:
    40 lines) pushes the error itself off a small terminal."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (options: {self.prog} --help)\n")


def add_parser(sub) -> None:
    from segdeck.core.jobs.registry import JOBS, get_job_class
    from segdeck.core.params import field_specs

    p = sub.add_parser("run", help="run a batch job over a folder of images (or the file a job takes, e.g. a CSV)")
    jobs = p.add_subparsers(dest="job", metavar="JOB", required=True, parser_class=_OneLineErrors)
    for name in JOBS:
        try:
            cls = get_job_class(name)
        except ImportError:
            continue
        jp = jobs.add_parser(name, help=cls.description, description=cls.description)
        jp.add_argument("input", metavar="INPUT", help=getattr(cls, "input_help", None)
                        or "folder of images (searched recursively) or one image")
        jp.add_argument("--out", metavar="DIR", help="output root (default: a sibling folder INPUT.segdeck)")
        jp.add_argument("--preset", metavar="NAME", help="named parameter preset")
        jp.add_argument("--config", metavar="FILE", help="TOML file with parameters (a job.toml works)")
        jp.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="sets",
                        help="set a parameter by dotted name (repeatable)")
        jp.add_argument("--events", action="store_true", help="print events as JSON lines instead of a progress bar")
        jp.add_argument("--json", action="store_true",
                        help="end stdout with a JSON summary object (job_dir, status, counts) instead of the job folder")
        jp.add_argument("--skip-failed", action="store_true", help="do not retry items that failed in an earlier run")
        jp.add_argument("--fresh", action="store_true",
                        help="start over: forget which items an earlier run did (also a damaged manifest)")
        rg = jp.add_argument_group("executor", "where items are computed (the job folder stays with this process)")
        rg.add_argument("--executor", choices=["local", "ray"], default="local",
                        help="local: this process (default); ray: Ray workers (pip install 'segdeck[ray]')")
        rg.add_argument("--ray-address", metavar="ADDR",
                        help="Ray cluster: 'auto' on a cluster node, ray://HEAD:10001 for a client "
                             "(default: RAY_ADDRESS, else a local Ray on this machine)")
        rg.add_argument("--ray-workers", metavar="N", type=int,
                        help="number of Ray workers (default: as many as the cluster's CPUs, or GPUs for a GPU job)")
        rg.add_argument("--ray-send-bytes", action="store_true",
                        help="send the images' bytes to the workers (no shared file system) instead of their paths")
        group = jp.add_argument_group("parameters")
        for spec in field_specs(cls.Params):
            if spec.derived:  # filled in by the params' validators (job.toml records it)
                continue
            flag = "--" + spec.name.replace("_", "-")
            help_txt = spec.description or spec.name
            rng = []
            if spec.ge is not None or spec.gt is not None:
                rng.append(f">= {spec.ge}" if spec.ge is not None else f"> {spec.gt}")
            if spec.le is not None or spec.lt is not None:
                rng.append(f"<= {spec.le}" if spec.le is not None else f"< {spec.lt}")
            if rng:
                help_txt += f" [{', '.join(rng)}]"
            if spec.optional:  # '' on the command line empties the field (its default)
                shown = "empty" if spec.default is None else spec.default
                help_txt += f" (default: {shown}; '' = empty)"
            else:
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
    from segdeck.core.errors import SegdeckError
    from segdeck.core.jobs.registry import get_job_class
    from segdeck.core.jobs.runner import job_dir_for, run_job
    from segdeck.core.params import field_specs, parse_scalar, resolve

    cls = get_job_class(args.job_name)
    job_dir = None

    def bail(message: str, what: str | None = None) -> int:
        """One error (line per problem) on stderr; with --json also the last stdout line,
        even when the run never started."""
        code = _fail_lines(what, message) if what else fail(message)
        if args.json:
            _print_last_line(json.dumps({"job_dir": job_dir and str(job_dir), "status": "error",
                                         "exit_code": code, "error": message}))
        return code

    optional = {s.name for s in field_specs(cls.Params) if s.optional}
    overrides = {}
    for key, value in vars(args).items():
        if key.startswith("param:") and value is not _SKIP:
            name = key[len("param:"):]
            if name in optional and isinstance(value, str) and not value.strip():
                overrides[name] = None  # `--deep.embedding-weight ''`: the field empty, as in the TUI form
            else:
                overrides[name] = parse_scalar(value) if isinstance(value, str) else value
    input_path = Path(args.input)
    try:  # each job says what it takes: a folder of images, an image, a CSV, ...
        cls.check_input(input_path)
    except (ValueError, SegdeckError) as exc:
        from segdeck.core.jobs.registry import jobs_for_input

        others = jobs_for_input(input_path) if input_path.exists() else []
        hint = f" (jobs that take it: {', '.join(others)})" if others else ""
        return bail(f"{exc}{hint}")
    try:
        params = resolve(cls.Params, cls.name, preset=args.preset, config=args.config, sets=args.sets, overrides=overrides)
    except SegdeckError as exc:
        return bail(_input_settings_hint(cls, str(exc), input_path), what="bad parameters")
    executor = None
    if args.executor == "ray":
        from segdeck.core.jobs.executors import RayExecutor, import_ray

        if args.ray_workers is not None and args.ray_workers < 1:
            return bail("--ray-workers must be at least 1")
        try:
            import_ray()
        except SegdeckError as exc:
            return bail(str(exc))
        executor = RayExecutor(args.ray_address, args.ray_workers, send_bytes=args.ray_send_bytes)
    elif args.ray_address or args.ray_workers or args.ray_send_bytes:
        return bail("--ray-address, --ray-workers and --ray-send-bytes need --executor ray")
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
        summary = run_job(job, sink=sink, cancel=cancel, retry_failed=not args.skip_failed, fresh=args.fresh,
                          executor=executor)
    except SegdeckError as exc:
        close()
        return bail(str(exc))
    except OSError as exc:  # the job folder cannot be created or written (--out on a read-only disk)
        close()
        return bail(f"cannot write the job folder {job_dir}: {exc.strerror or exc}")
    close()
    if summary.status == "error":
        code = fail(summary.error or "the job could not start")
        if args.json:
            _print_last_line(json.dumps(_summary_dict(summary)))
        return code
    if getattr(params, "dry_run", False) and summary.status == "done":  # "nothing to do" would read as a verdict
        from rich.markup import escape

        err_console.print(f"[green]dry run done[/]: nothing computed -> {escape(str(summary.job_dir))}", soft_wrap=True)
    else:
        err_console.print(summary_line(summary), soft_wrap=True)
    # the last stdout line is machine-readable, never wrapped: $(segdeck run ... | tail -1)
    if args.json:
        _print_last_line(json.dumps(_summary_dict(summary)))
    elif not args.events:  # with --events stdout stays pure JSON lines
        _print_last_line(str(summary.job_dir))
    return summary.exit_code


def summary_line(summary) -> str:
    """The run's one-line outcome (rich markup): ``done: 3 done, 1 failed, 2 already
    done, ...``, or ``nothing to do: 4 done, 1 failed`` for a finished re-run."""
    from rich.markup import escape

    from segdeck.core.jobs.report import counts_text

    colour = {"done": "green", "failed": "yellow", "cancelled": "yellow"}.get(summary.status, "red")
    folder = escape(str(summary.job_dir))
    if summary.done + summary.failed == 0 and summary.status in ("done", "failed"):
        failed = f", {summary.skipped_failed} failed (not retried: --skip-failed)" if summary.skipped_failed else ""
        return f"[{colour}]nothing to do[/]: {summary.skipped} done{failed} -> {folder}"
    counts = counts_text(summary.done, summary.failed, summary.skipped, summary.skipped_failed)
    return f"[{colour}]{summary.status}[/]: {escape(counts)}, {summary.seconds:.1f} s -> {folder}"


def _summary_dict(summary) -> dict:
    return {
        "job_dir": str(summary.job_dir), "status": summary.status, "exit_code": summary.exit_code,
        "total": summary.total, "done": summary.done, "failed": summary.failed, "skipped": summary.skipped,
        "skipped_failed": summary.skipped_failed, "seconds": round(summary.seconds, 3), "error": summary.error,
    }


def _clip(text: str, n: int) -> str:
    """``text`` cut to ``n`` characters (its start kept, an ellipsis at the cut)."""
    return text if len(text) <= n else text[: n - 1] + "…"


def _print_last_line(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _input_settings_hint(cls, message: str, input_path: Path) -> str:
    """``message`` with each ``NAME: unknown parameter ...`` line about a setting of the
    job's input file (``cls.input_settings``, e.g. a propagate spec's ``mask_mode``)
    replaced by where that setting lives."""
    settings = set(getattr(cls, "input_settings", ()))
    if not settings:
        return message
    out = []
    for line in message.splitlines():
        name, sep, rest = line.partition(": unknown parameter")
        if sep and name.strip() in settings:
            line = f"{name}: a setting of {input_path.name}, not a run option (edit it there)"
        out.append(line)
    return "\n".join(out)


def _fail_lines(what: str, message: str) -> int:
    """``error: what: message`` on one line, or one line per problem when there are several."""
    lines = [ln for ln in message.splitlines() if ln.strip()]
    if len(lines) <= 1:
        return fail(f"{what}: {message.strip()}")
    return fail("\n".join([f"{what} ({len(lines)} problems):", *lines]))


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

    from segdeck.core.jobs.events import ItemDone, ItemFailed, ItemProgress, JobStarted, Message
    from segdeck.core.jobs.events import Progress as ProgressEvent
    from segdeck.core.jobs.report import event_line, step_text

    styles = {"warning": "yellow", "error": "red", "info": "dim"}

    def print_line(event) -> None:
        """An event as the reporter words it, styled by its level."""
        line = event_line(event)
        if line is not None:
            style = styles.get(line.level, "default")
            progress.console.print(f"[{style}]{escape(line.text)}[/]", soft_wrap=True)

    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[note]}"),
        console=err_console, transient=False,
    )
    state: dict = {"task": None, "sub": {}, "started": False, "finished": 0}

    def start() -> None:
        if not state["started"]:
            state["started"] = True
            progress.start()

    def sink(event):
        if isinstance(event, JobStarted):
            if event.todo:  # a finished re-run gets one "nothing to do" line, not an empty 0/0 bar
                start()
                state["task"] = progress.add_task(job_name, total=event.todo, note="")
        elif isinstance(event, ItemDone) and state["task"] is not None:
            state["finished"] += 1
            progress.update(state["task"], completed=state["finished"], note=escape(event.item[-40:]))
        elif isinstance(event, ItemProgress) and state["task"] is not None:
            # the bar (and so rich's ETA) moves inside a long item: 3 items + 12/40 regions
            progress.update(state["task"], completed=state["finished"] + (event.fraction or 0.0),
                            note=escape(_clip(step_text(event), 70)))
        elif isinstance(event, ItemFailed):
            print_line(event)
            if state["task"] is not None:
                state["finished"] += 1
                progress.update(state["task"], completed=state["finished"])
        elif isinstance(event, Message):
            print_line(event)
        elif isinstance(event, ProgressEvent):
            start()
            # the model manager's steps count bytes (unit "bytes"): shown in MB
            scale, note = (1e6, "MB") if event.unit == "bytes" else (1, "")
            total = None if event.total is None else event.total / scale
            tid = state["sub"].get(event.what)
            if tid is None:
                tid = state["sub"][event.what] = progress.add_task(event.what, total=total, note=note)
            progress.update(tid, completed=event.done / scale, total=total)

    def close() -> None:
        if state["started"]:
            progress.stop()

    return sink, close
