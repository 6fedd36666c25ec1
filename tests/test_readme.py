"""Runs every ```python block of README.md, in order, in one namespace, so the README cannot rot."""

import os
import re

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def test_readme_python_blocks_run(tmp_path):
    with open(README) as f:
        blocks = re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)
    assert blocks, "README.md has no python examples"
    namespace = {}
    for i, block in enumerate(blocks):
        # Each block is compiled from a file of its own: paddle.jit.to_static reads the source of
        # the functions it converts from their file.
        path = tmp_path / f"readme_block_{i}.py"
        path.write_text(block)
        exec(compile(block, str(path), "exec"), namespace)
