"""``segdeck jobs [FOLDER ...]``: list jobs (state, progress, ETA, why one failed),
started from the CLI or the TUI; ``--cancel`` stops running ones.

Jobs are found beside FOLDER (its ``FOLDER.segdeck`` sibling) and in the recent-jobs
registry (every run records its job folder, so jobs written anywhere with ``--out``
are listed too). Without FOLDER: the current folder and every recent job.
"""

from __future__ import annotations

from pathlib import Path

from segdeck.commands import err_console, fail


def add_parser(sub) -> None:
    p = sub.add_parser(
        "jobs", help="list jobs (running and finished), also those written elsewhere with --out",
        description="List the job folders for FOLDER (its FOLDER.segdeck sibling, and jobs run on it "
                    "with --out elsewhere); without FOLDER, the current folder and every recent job.")
    p.add_argument("folders", nargs="*", metavar="FOLDER",
                   help="input folders (or images) whose jobs to list (default: all recent jobs)")
    p.add_argument("--cancel", action="store_true",
                   help="ask every running job listed to stop after its current item")
    p.add_argument("--limit", type=int, default=200, metavar="N",
                   help="consider at most N recent jobs from the registry (default: 200)")
    p.set_defaults(func=run)


_COLOURS = {"running": "cyan", "done": "green", "failed": "yellow", "cancelled": "yellow",
            "error": "red", "interrupted": "magenta"}


def run(args) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from segdeck.core.jobs.status import format_eta, list_job_dirs, read_job

    roots = [Path(f) for f in args.folders]
    for root in roots:
        if not root.exists():
            return fail(f"folder {root} does not exist")
    limit = max(0, args.limit)
    dirs = list_job_dirs(*roots, limit=limit) if roots else list_job_dirs(Path("."), all_recent=True, limit=limit)
    if not dirs:
        err_console.print("no jobs found" + ("; nothing to cancel" if args.cancel else ""))
        return 1 if args.cancel else 0
    table = Table(box=None, header_style="bold")
    for col in ("job", "state", "done", "failed", "total", "ETA", "folder"):
        table.add_column(col, no_wrap=col != "folder", overflow="fold" if col == "folder" else "ellipsis")
    reasons: list[str] = []  # one unwrapped line per job that needs explaining, below the table
    cancelled = 0
    for d in dirs:
        try:
            info = read_job(d)
        except (OSError, ValueError) as exc:
            table.add_row(d.name, "[red]unreadable[/]", "", "", "", "", escape(str(d)))
            reasons.append(f"  [red]{escape(d.name)}[/]: unreadable ({escape(str(exc))})")
            continue
        colour = _COLOURS.get(info.state, "")
        state = f"[{colour}]{info.state}[/]" if colour else info.state
        table.add_row(info.job, state, str(info.counts.done), str(info.counts.failed), str(info.counts.total),
                      format_eta(info.eta_s) if info.state == "running" else "", escape(str(d)))
        if info.reason:
            # a multi-line reason (a dry run's per-group table) stays under its job, indented
            first, *rest = info.reason.splitlines() or [""]
            reasons.append(f"  [{colour or 'default'}]{escape(d.name)}[/] ({info.state}): {escape(first)}"
                           + "".join(f"\n      {escape(line)}" for line in rest))
        if args.cancel and info.state == "running" and info.pid:
            from segdeck.tui.jobwatch import cancel_job

            if cancel_job(info.pid):
                cancelled += 1
                err_console.print(f"cancelling {escape(d.name)} (pid {info.pid})", soft_wrap=True)
            else:
                err_console.print(f"{escape(d.name)} had already stopped (pid {info.pid} gone)", soft_wrap=True)
    out = Console()
    out.print(table)
    if reasons:
        out.print("[bold]why[/]")
        for line in reasons:
            out.print(line, soft_wrap=True)
    if args.cancel and not cancelled:
        err_console.print(f"nothing to cancel: none of the {len(dirs)} jobs listed is running")
        return 1
    return 0

