"""``segdeck keys [--keymap NAME] [--markdown | --update-readme FILE]``: the key and mouse
bindings of the annotation windows, from ``keymaps/*.toml`` plus the user's keymap file."""

from __future__ import annotations

from pathlib import Path

from segdeck.commands import fail


def add_parser(sub) -> None:
    p = sub.add_parser("keys", help="print the key and mouse bindings of the annotation windows")
    p.add_argument("--keymap", default="default", metavar="NAME",
                   help="shipped keymap (default, xanylabeling) or a .toml path (default: default)")
    p.add_argument("--markdown", action="store_true", help="print a markdown table")
    p.add_argument("--update-readme", metavar="FILE",
                   help="rewrite FILE's section between <!-- keymap:start --> and <!-- keymap:end --> "
                        "(the shipped keymap only, without the user's file)")
    p.add_argument("--no-user", action="store_true", help="ignore the user's keymap file")
    p.set_defaults(func=run)


def run(args) -> int:
    from segdeck.annotate.keymap import (
        KeymapError,
        load_keymap,
        replace_readme_section,
        user_keymap_path,
    )

    readme = args.update_readme
    try:
        km = load_keymap(args.keymap, user_file=False if (args.no_user or readme) else None)
    except KeymapError as exc:
        return fail(str(exc))
    if readme:
        path = Path(readme)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            return fail(f"{path}: cannot read ({exc.strerror})")
        try:
            new = replace_readme_section(text, km.markdown())
        except ValueError as exc:
            return fail(f"{path}: {exc}")
        if new != text:
            from segdeck.core.imageio import write_text_atomic

            write_text_atomic(path, new)
        print(f"{path}: keymap section {'updated' if new != text else 'already up to date'}")
        return 0
    if args.markdown:
        print(km.markdown(), end="")
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"segdeck keymap: {km.name}", show_lines=False)
    for col in ("Window", "Action", "Keys", "Mouse", "What it does"):
        table.add_column(col, overflow="fold")
    last = None
    for session, action, keys, mouse, desc in km.rows():
        table.add_row(session if session != last else "", action, keys, mouse, desc,
                      end_section=False)
        last = session
    console = Console()
    console.print(table)
    console.print(f"sources: {', '.join(str(s) for s in km.sources)}; user overrides go in {user_keymap_path()}",
                  highlight=False, soft_wrap=True)
    for line in km.conflicts() + km.qt_unreachable():
        console.print(f"[yellow]warning:[/] {line}", highlight=False)
    return 0
