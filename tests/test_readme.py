"""Runs every ```python block of README.md, in order, in one namespace, so the README cannot rot."""

import os
import re

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def test_readme_python_blocks_run():
    with open(README) as f:
        blocks = re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)
    assert blocks, "README.md has no python examples"
    namespace = {}
    for block in blocks:
        exec(compile(block, README, "exec"), namespace)
