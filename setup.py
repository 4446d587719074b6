"""Package layout: the import packages segdeck.core / .annotate / .tui live in the
top-level folders core/, annotate/ and tui/ (see ARCHITECTURE.md); every sub-package found
there is mapped automatically, so adding a folder with an __init__.py needs no edit here."""

from pathlib import Path

from setuptools import find_packages, setup

package_dir = {"segdeck": "segdeck"}
for top in ("core", "annotate", "tui"):
    if not (Path(__file__).parent / top / "__init__.py").is_file():
        continue
    package_dir[f"segdeck.{top}"] = top
    for sub in find_packages(top):
        package_dir[f"segdeck.{top}.{sub}"] = f"{top}/{sub.replace('.', '/')}"

setup(packages=sorted(package_dir), package_dir=package_dir)
