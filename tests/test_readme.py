"""The documentation cannot rot: every ```python block of README.md and of each docs/*.md page
runs, and every relative link in those pages, the changelog and the benchmark READMEs points at
a file (and heading) that exists.

Each page's blocks run in order in one namespace of their own, so each page must be
self-contained: its first block does the imports and set-up the page needs.
"""

import glob
import os
import re
import warnings

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ["README.md"] + sorted(os.path.relpath(p, ROOT)
                               for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))
# Pages whose links are checked too (they have no python examples).
LINKED_PAGES = PAGES + ["CHANGELOG.md", "benchmarks/README.md", "benchmarks/gpu/README.md"]
# Link targets that another change adds; a link to one is checked once the file exists.
WRITTEN_ELSEWHERE = {"docs/contributing.md"}

FENCE = re.compile(r"^```.*?^```", flags=re.S | re.M)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def read(page):
    with open(os.path.join(ROOT, page)) as f:
        return f.read()


def python_blocks(text):
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def anchors(text):
    """The ids GitHub gives a page's headings: lower case, punctuation dropped, spaces to
    hyphens, a repeated id suffixed -1, -2, ..."""
    seen = {}
    for heading in re.findall(r"^#{1,6}\s+(.*?)\s*#*\s*$", FENCE.sub("", text), flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        yield slug if n == 0 else f"{slug}-{n}"


@pytest.mark.parametrize("page", PAGES)
def test_python_blocks_run(page, tmp_path):
    blocks = python_blocks(read(page))
    if page == "README.md":
        assert blocks, "README.md has no python example"
    namespace = {}
    for i, block in enumerate(blocks):
        # Each block is compiled from a file of its own: paddle.jit.to_static reads the source of
        # the functions it converts from their file.
        path = tmp_path / f"{os.path.basename(page)[:-3]}_block_{i}.py"
        path.write_text(block)
        exec(compile(block, str(path), "exec"), namespace)


@pytest.mark.parametrize("page", LINKED_PAGES)
def test_relative_links_resolve(page):
    text = read(page)
    broken = []
    for target in LINK.findall(FENCE.sub("", text)):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):       # http:, https:, mailto:
            continue
        path, _, fragment = target.partition("#")
        resolved = (os.path.normpath(os.path.join(os.path.dirname(page), path)) if path
                    else page)
        if not os.path.exists(os.path.join(ROOT, resolved)):
            if resolved in WRITTEN_ELSEWHERE:
                warnings.warn(f"{page} links to {resolved}, which does not exist yet")
                continue
            broken.append(f"{target} (no file {resolved})")
        elif fragment and resolved.endswith(".md"):
            if fragment not in set(anchors(read(resolved))):
                broken.append(f"{target} (no heading #{fragment} in {resolved})")
    assert not broken, f"{page}: broken links: " + "; ".join(broken)
