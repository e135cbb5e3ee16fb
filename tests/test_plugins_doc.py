"""docs/plugins.md builds a working plugin: its files, copied out, pass the conformance suite.

The guide promises that a third party who follows it alone gets a plugin the suite
accepts. This test is that third party: it writes each file the page gives (a fenced
block right after ``<!-- file: PATH -->``), installs the folder as pip would, with the
page's own pyproject.toml, and runs pytest in it, in a fresh process.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"
FILE_BLOCK = re.compile(r"<!-- file: (?P<path>[^ ]+) -->\n```[a-z]*\n(?P<body>.*?)\n```\n", re.S)
# Every operation the suite runs against a plugin lacking what Acme lacks, at least.
LEAST_PASSED = 15


def guide_files() -> dict[str, str]:
    files = {m["path"]: m["body"] + "\n" for m in FILE_BLOCK.finditer(GUIDE.read_text())}
    assert {"pyproject.toml", "tests/conftest.py", "tests/test_conformance.py"} <= set(files)
    return files


def test_the_guides_plugin_installs_and_passes_the_conformance_suite(tmp_path: Path) -> None:
    folder = tmp_path / "acme-plugin"
    for name, body in guide_files().items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(site), str(folder)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(site)}

    listed = subprocess.run(
        [sys.executable, "-m", "gateway", "plugins"],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert re.search(r"^acme +finetune-gateway-acme 0\.1\.0", listed.stdout, re.M), listed.stdout

    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=folder, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    report = run.stdout[-4000:] + run.stderr[-2000:]
    assert run.returncode == 0, report
    passed = re.search(r"(\d+) passed", run.stdout)
    assert passed and int(passed[1]) >= LEAST_PASSED, report
    assert "failed" not in run.stdout.splitlines()[-1], report
