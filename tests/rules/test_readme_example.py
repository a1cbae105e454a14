"""The README shows the shipped example file verbatim, so the docs cannot drift from it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_readme_yaml_block_is_the_example_file() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("<!-- BEGIN rules section -->")[1].split("<!-- END rules section -->")[0]
    block = re.search(r"```yaml\n(.*?)```", section, re.DOTALL)
    assert block is not None
    assert block.group(1) == (ROOT / "rules" / "example.yaml").read_text()
