"""The documentation and the product files: no development history, a short README, links that resolve.

The product (README.md, docs/, src/, workflow/, config/, tests/) speaks of the software
only: no numbered development periods or experiments, no account of which machines a
period had, no references to design documents outside the repository (the contracts are
in docs/design.md). The patterns and the samples below are assembled from pieces so that
this file does not match them itself."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pipeline_helpers import REPO

SCANNED = ["README.md", "docs", "src", "workflow", "config", "tests"]
#: (pattern, flags): development-process wording that must not appear in the product.
FORBIDDEN = [
    (r"\bsessions? [0-9]+", re.IGNORECASE),
    (r"\bexperiments? [0-9]+", re.IGNORECASE),
    (r"\bexp\. ?[0-9]+", re.IGNORECASE),
    (r"\blent\b", re.IGNORECASE),
    ("DESIGN" + " §", 0),
    ("DESIGN" + r"\.md", 0),
]
README_MAX_LINES = 150
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def _product_files() -> list[Path]:
    files: list[Path] = []
    for entry in SCANNED:
        path = REPO / entry
        candidates = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for p in candidates:
            if ("__pycache__" in p.parts or any(part.endswith(".egg-info") for part in p.parts)
                    or p.resolve() == Path(__file__).resolve()):  # build output (git-ignored), and this file
                continue
            try:
                p.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                continue  # binary (figures, probes)
            files.append(p)
    return files


def test_product_files_carry_no_development_history():
    hits = []
    for path in _product_files():
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for pattern, flags in FORBIDDEN:
                if re.search(pattern, line, flags):
                    hits.append(f"{path.relative_to(REPO)}:{n}: {pattern!r}: {line.strip()[:100]}")
    assert not hits, "development-process wording in the product:\n" + "\n".join(hits)


def test_the_scan_finds_what_it_forbids(tmp_path):
    """The patterns match the wording they are meant to catch, and not ordinary prose."""
    caught = [f"measured in {'sess'}ion 4", f"{'Exper'}iment 27 shows", f"({'ex'}p. 21)", f"no GPU was {'le'}nt",
              f"{'DESIGN'} §2.5", f"see {'DESIGN'}.md"]
    fine = ["equivalent", "the session's log", "docs/design.md, 'Overlap constraint'", "an experiment",
            "lentil"]
    for text in caught:
        assert any(re.search(p, text, f) for p, f in FORBIDDEN), text
    for text in fine:
        assert not any(re.search(p, text, f) for p, f in FORBIDDEN), text


def test_readme_is_short():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; at most {README_MAX_LINES}"


def test_readme_keeps_the_two_command_quickstart_and_the_dag_figure():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert "```bash\nmake demo\nmake test\n```" in text
    assert "(docs/figures/rulegraph.png)" in text and (REPO / "docs" / "figures" / "rulegraph.png").is_file()
    assert "make rulegraph" in text and "rulegraph:" in (REPO / "Makefile").read_text()


def _slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6} +(.+?) *$", text, flags=re.M)}


MARKDOWN = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


@pytest.mark.parametrize("doc", MARKDOWN, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_markdown_links_resolve(doc):
    text = re.sub(r"```.*?```", "", doc.read_text(encoding="utf-8"), flags=re.S)
    broken = []
    for m in LINK.finditer(text):
        target = m.group(1) or m.group(2)
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        dest = (doc.parent / file).resolve() if file else doc
        if not dest.exists():
            broken.append(f"{target}: {dest} does not exist")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target}: no heading with anchor #{anchor} in {dest.relative_to(REPO)}")
    assert not broken, f"{doc.relative_to(REPO)}:\n" + "\n".join(broken)
