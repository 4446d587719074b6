"""``segdeck jobs [FOLDER ...]``: list the jobs found in output folders (state, progress,
ETA), started from the CLI or the TUI; ``--cancel`` stops running ones."""

from __future__ import annotations

from pathlib import Path

from segdeck.commands import err_console, fail


def add_parser(sub) -> None:
    p = sub.add_parser("jobs", help="list jobs in output folders (running and finished)",
                       description="List the job folders under FOLDER and its FOLDER.segdeck sibling.")
    p.add_argument("folders", nargs="*", default=["."], metavar="FOLDER",
                   help="folders to search (default: the current folder)")
    p.add_argument("--cancel", action="store_true",
                   help="ask every running job found to stop after its current item")
    p.set_defaults(func=run)


def run(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from segdeck.core.jobs.status import find_job_dirs, format_eta, read_job
    from segdeck.tui.jobwatch import cancel_job

    roots = [Path(f) for f in args.folders]
    for root in roots:
        if not root.exists():
            return fail(f"folder {root} does not exist")
    dirs = find_job_dirs(*roots)
    if not dirs:
        err_console.print("no jobs found")
        return 0
    table = Table(box=None, header_style="bold")
    for col in ("job", "state", "done", "failed", "total", "ETA", "folder"):
        table.add_column(col, no_wrap=col != "folder", overflow="fold" if col == "folder" else "ellipsis")
    for d in dirs:
        try:
            info = read_job(d)
        except (OSError, ValueError) as exc:
            table.add_row(d.name, "[red]unreadable[/]", "", "", "", "", f"{d} ({exc})")
            continue
        colour = {"running": "cyan", "done": "green", "failed": "yellow", "cancelled": "yellow",
                  "error": "red", "interrupted": "magenta"}.get(info.state, "")
        state = f"[{colour}]{info.state}[/]" if colour else info.state
        table.add_row(info.job, state, str(info.counts.done), str(info.counts.failed), str(info.counts.total),
                      format_eta(info.eta_s) if info.state == "running" else "", str(d))
        if args.cancel and info.state == "running" and info.pid:
            if cancel_job(info.pid):
                err_console.print(f"cancelling {d.name} (pid {info.pid})")
    Console().print(table)
    return 0
