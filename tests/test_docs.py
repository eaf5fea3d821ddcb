"""The README is a landing page and the manual's links hold: every relative link in ``README.md`` and
``docs/*.md`` names a file that exists (and a heading there, for ``page.md#anchor``), and the README stays
short."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")  # [text](target) and ![alt](target)
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
README_MAX_LINES = 220


def relative_links(page: Path) -> list[str]:
    """The link targets of ``page`` outside code blocks that are neither URLs nor anchors in the page itself."""
    text = FENCE.sub("", page.read_text())
    targets = [match.group(1) for match in LINK.finditer(text)]
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


def anchors(page: Path) -> set[str]:
    """GitHub's anchors for the headings of ``page``: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#{1,6} (.+)$", FENCE.sub("", page.read_text()), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_names_an_existing_file(page):
    missing = [t for t in relative_links(page) if not (page.parent / t.split("#")[0]).exists()]
    assert not missing, f"{page.relative_to(REPO)} links to files that do not exist: {missing}"
    to_headings = [t for t in relative_links(page) if "#" in t and t.split("#")[0].endswith(".md")]
    broken = [t for t in to_headings if t.split("#")[1] not in anchors(page.parent / t.split("#")[0])]
    assert not broken, f"{page.relative_to(REPO)} links to headings that do not exist: {broken}"


def test_the_readme_is_a_landing_page_that_links_every_manual_page():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= README_MAX_LINES, "move the details to a page under docs/"
    linked = {Path(t.split("#")[0]).name for t in relative_links(REPO / "README.md") if t.startswith("docs/")}
    pages = {p.name for p in PAGES if p.parent.name == "docs" and p.name != "README.md"}
    assert pages <= linked, f"docs pages the README does not link: {sorted(pages - linked)}"
