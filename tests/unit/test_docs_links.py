"""README.md and docs/*.md: every relative link resolves (the file, and the heading when it names one), and
every shell block says whether a test runs it (`<!-- tested: <test file> … -->`, naming a test file that
exists and mentions the page) or why not (`<!-- not run…: <reason> -->`). docs/testing.md lists them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL = {"sh", "bash", "shell", "console"}

LINK = re.compile(r"(?<!!)\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```(\w*)\s*$")


def _prose(text: str) -> str:
    """The page without its fenced blocks (a link inside code is not a link)."""
    out, inside = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            inside = not inside
            continue
        if not inside:
            out.append(line)
    return "\n".join(out)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, markup and punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    text = re.sub(r"[^\w\- ]", "", text.replace("`", ""))
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for line in _prose(page.read_text()).splitlines():
        if m := re.match(r"^#{1,6}\s+(.*)$", line):
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
    return found


def links(page: Path) -> list[str]:
    return [a or b for a, b in LINK.findall(_prose(page.read_text()))]


def broken(page: Path) -> list[str]:
    bad = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:, data:
            continue
        path, _, fragment = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            bad.append(f"{target}: no such file")
        elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
            bad.append(f"{target}: no heading #{fragment} in {resolved.name}")
    return bad


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    assert broken(page) == []


def test_the_scan_finds_the_readmes_links() -> None:
    found = links(ROOT / "README.md")
    assert {"docs/api.md", "docs/guarantees.md", "docs/studio.png", "clients/typescript/README.md"} <= set(found)


def test_the_checker_catches_a_broken_link_and_a_missing_heading(tmp_path: Path) -> None:
    (tmp_path / "b.md").write_text("# Title\n\n## Limits: `Retry-After` and the RateLimit headers\n")
    page = tmp_path / "a.md"
    page.write_text(
        "[ok](b.md#limits-retry-after-and-the-ratelimit-headers) [gone](c.md) [wrong](b.md#nope) "
        "[web](https://x.y/z)\n```sh\n[not a link](nowhere.md)\n```\n"
    )
    assert broken(page) == ["c.md: no such file", "b.md#nope: no heading #nope in b.md"]


def shell_blocks(page: Path) -> list[tuple[int, str, str]]:
    """(line, the comment just above the block or "", the block) for each shell block of a page."""
    lines = page.read_text().splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m:
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            if m.group(1) in SHELL:
                above = lines[i - 1].strip() if i > 0 else ""
                note = above if above.startswith("<!--") else ""
                blocks.append((i + 1, note, "\n".join(lines[i + 1 : end])))
            i = end + 1
        else:
            i += 1
    return blocks


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shell_block_says_where_it_is_tested_or_why_not(page: Path) -> None:
    unsaid = []
    for line, note, _ in shell_blocks(page):
        if m := re.match(r"<!-- tested: (tests/\S+\.py)", note):
            test = ROOT / m.group(1)
            assert test.is_file(), f"{page.name}:{line} names {m.group(1)}, which does not exist"
            assert page.name in test.read_text(), f"{m.group(1)} does not mention {page.name}"
        elif not re.match(r"<!-- not run[^:]*: \S", note):
            unsaid.append(f"{page.relative_to(ROOT)}:{line}")
    assert unsaid == [], "add <!-- tested: tests/… --> or <!-- not run: why --> above these blocks"
