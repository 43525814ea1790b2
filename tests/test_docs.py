"""The README and docs/ point only at what exists: every relative link and every docs/*.md they name resolves."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")  # [text](target)
NAMED = re.compile(r"(?<![\w/.])docs/[\w-]+\.md")  # a docs page named in the text, linked or not


def _relative_targets(page: Path) -> list[str]:
    targets = [t.split("#")[0] for t in LINK.findall(page.read_text()) if not re.match(r"[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]
    return [t for t in targets if t]


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_relative_link_and_named_page_resolves(page):
    missing = [t for t in _relative_targets(page) if not (page.parent / t).exists()]
    missing += [name for name in NAMED.findall(page.read_text()) if not (ROOT / name).exists()]
    assert missing == []


def test_the_link_checker_finds_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("[ok](page.md) [gone](nowhere.md#part) [web](https://example.org) [here](#top)")
    assert [t for t in _relative_targets(page) if not (page.parent / t).exists()] == ["nowhere.md"]


def test_the_readme_links_the_architecture_map_and_the_extension_guide():
    links = _relative_targets(ROOT / "README.md")
    assert "docs/architecture.md" in links and "docs/extending.md" in links
