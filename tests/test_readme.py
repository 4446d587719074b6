"""The README's set-up commands exist as Makefile targets."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def readme_make_commands(text: str) -> list[str]:
    """Targets of the ``make ...`` lines inside the README's fenced code blocks."""
    targets = []
    for block in re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.S | re.M):
        for line in block.splitlines():
            line = line.split("#", 1)[0].strip()
            if line.startswith("make "):
                targets.extend(t for t in line.split()[1:] if "=" not in t and not t.startswith("-"))
    return targets


def makefile_targets(text: str) -> set[str]:
    targets = set()
    for match in re.finditer(r"^([A-Za-z0-9_.-][A-Za-z0-9_. -]*?)\s*:(?!=)", text, flags=re.M):
        targets.update(match.group(1).split())
    return targets


def test_readme_commands_are_make_targets():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    commands = readme_make_commands(readme)
    assert {"run", "test"} <= set(commands), f"README set-up must show `make run` and `make test`, found {commands}"
    missing = [c for c in commands if c not in makefile_targets(makefile)]
    assert not missing, f"README uses make targets the Makefile lacks: {missing}"


def test_parsers_on_examples():
    readme = "text\n```sh\nmake run    # go\nmake test\n```\n`make nope` inline is ignored\n```\nmake bench SAMPLES=x\n```\n"
    assert readme_make_commands(readme) == ["run", "test", "bench"]
    assert makefile_targets("run: $(STAMP)\n\tx\nA := 1\ntest bench: y\n") == {"run", "test", "bench"}


def test_readme_automask_options_match_the_params():
    """The README's automask option table is exactly what the params model gives."""
    from segdeck.core.automask import options_markdown

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    m = re.search(r"<!-- automask-options:start -->\n(.*?)<!-- automask-options:end -->", readme, flags=re.S)
    assert m, "README lacks the automask option table markers"
    assert m.group(1) == options_markdown(), (
        "README automask options drifted from AutomaskParams; paste the output of "
        "`python -c 'from segdeck.core.automask import options_markdown; print(options_markdown(), end=\"\")'`"
    )
    assert "`--mask-threshold`" in m.group(1) and "`--point-grids`" in m.group(1)


def test_readme_export_formats_match_the_registry():
    from segdeck.core.export import FORMATS

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Open the results elsewhere", 1)[1].split("\n## ", 1)[0]
    for fmt in FORMATS:
        assert f"segdeck export {fmt} " in section, fmt
