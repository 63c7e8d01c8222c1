"""Every source folder is a package, so `pip install .` ships all of it."""

from pathlib import Path

from setuptools import find_packages

ROOT = Path(__file__).resolve().parents[1]


def test_every_source_folder_is_installed():
    folders = {
        ".".join(p.relative_to(ROOT).parts)
        for p in (ROOT / "lcft_tf").rglob("*")
        if p.is_dir() and p.name != "__pycache__" and any(p.glob("*.py"))
    } | {"lcft_tf"}
    assert folders <= set(find_packages(str(ROOT), include=["lcft_tf", "lcft_tf.*"]))
