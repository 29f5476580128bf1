"""Every file, module, object and page that the documentation names exists.

The pages are ``README.md``, ``docs/*.md`` and ``docs/*.rst``. Checked, without Sphinx:

* dotted names ``skebflow.x.y`` in inline code (markdown backticks, reST literals and
  roles) import, or are attributes of what imports;
* repository paths (``docs/images/x.png``, ``examples/foo.py``,
  ``skebflow/estimators/_defaults.py``) exist;
* markdown links and images ``[text](target)`` and reST ``:doc:`` targets resolve;
* ``docs/api.rst`` lists every public name (the ``__all__`` of ``skebflow``,
  ``skebflow.exceptions`` and ``skebflow.datasets``).

The checkers are tested on a deliberately broken page too, so that they cannot pass by
finding nothing.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
# sphinx-gallery writes docs/sg_execution_times.rst at build time (ignored by git).
GENERATED_PAGES = {"sg_execution_times.rst"}
PAGES = sorted(
    p
    for p in [ROOT / "README.md", *DOCS.glob("*.md"), *DOCS.glob("*.rst")]
    if p.name not in GENERATED_PAGES
)

# Paths are checked when they start at one of the repository's own folders; what the
# commands write (demo-output/, bench-output/) and the site's build outputs are not files
# of the repository.
PATH_ROOTS = ("docs", "examples", "skebflow", "tests", ".ci")
BUILD_OUTPUTS = ("docs/_build", "docs/auto_examples", "docs/generated")

FENCED = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
# reST literal blocks: a paragraph ending in '::' and its indented lines, and directives'
# indented content (code-block, plot) are code, not prose.
RST_BLOCK = re.compile(r"::\n\n((?:[ \t]+.*\n|\n)+)")
INLINE = re.compile(r"`+([^`\n]+?)`+")
DOTTED = re.compile(r"(?<![\w./-])~?(skebflow(?:\.[A-Za-z_]\w*)+)")
PATH = re.compile(
    r"(?<![\w./:-])((?:" + "|".join(re.escape(r) for r in PATH_ROOTS) + r")/[\w./-]*\w)"
)
MD_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
DOC_ROLE = re.compile(r":doc:`(?:[^`<]*<)?([^`>]+)>?`")


def _prose(text: str) -> str:
    """The text without fenced code blocks and reST literal blocks."""
    return RST_BLOCK.sub("::\n\n", FENCED.sub("", text))


def dotted_names(text: str) -> set[str]:
    """The ``skebflow.x.y`` names in the inline code of a page."""
    names = set()
    for span in INLINE.findall(_prose(text)):
        names.update(DOTTED.findall(span))
    return names


def resolve(name: str) -> object:
    """Import the longest module prefix of ``name`` and get the rest as attributes."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(name)


def broken_names(text: str) -> list[str]:
    """The dotted names of a page that neither import nor resolve as attributes."""
    broken = []
    for name in sorted(dotted_names(text)):
        try:
            resolve(name)
        except (ImportError, AttributeError):
            broken.append(name)
    return broken


def repository_paths(text: str) -> set[str]:
    """The repository paths that a page names (prose and inline code, not code blocks)."""
    paths = set()
    for path in PATH.findall(_prose(text)):
        path = path.rstrip(".")
        if any(c in path for c in "*<>{}|") or path.startswith(BUILD_OUTPUTS):
            continue
        paths.add(path)
    return paths


def broken_paths(text: str) -> list[str]:
    """The repository paths of a page that do not exist."""
    return sorted(p for p in repository_paths(text) if not (ROOT / p).exists())


def broken_links(text: str, page: Path) -> list[str]:
    """Markdown link and image targets and ``:doc:`` targets of a page that do not exist."""
    broken = []
    for target in MD_LINK.findall(_prose(text)):
        if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL, or an anchor of this page (Sphinx checks those)
        if not (page.parent / target.split("#")[0]).exists():
            broken.append(target)
    for target in DOC_ROLE.findall(text):
        if target.startswith("auto_examples/"):
            continue  # written by sphinx-gallery at build time
        base = DOCS / target.lstrip("/")
        if not any(base.with_name(base.name + ext).exists() for ext in (".rst", ".md")):
            broken.append(f":doc:`{target}`")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_dotted_names_exist(page: Path) -> None:
    assert broken_names(page.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_paths_exist(page: Path) -> None:
    assert broken_paths(page.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_resolve(page: Path) -> None:
    assert broken_links(page.read_text(encoding="utf-8"), page) == []


def test_pages_are_found() -> None:
    names = {p.name for p in PAGES}
    assert {"README.md", "index.rst", "api.rst", "user_guide.md"} <= names


def test_api_page_lists_every_public_name() -> None:
    import skebflow
    import skebflow.datasets
    import skebflow.exceptions

    text = (DOCS / "api.rst").read_text(encoding="utf-8")
    # autosummary entries (indented names under the directive) and data directives
    listed = set(re.findall(r"^   ([\w.]+)$", text, re.MULTILINE))
    listed |= set(re.findall(r"^\.\. data:: ([\w.]+)$", text, re.MULTILINE))
    exceptions = set(skebflow.exceptions.__all__)
    missing = [f"skebflow.exceptions.{n}" for n in sorted(exceptions - listed)]
    # the top-level warnings are documented once, as skebflow.exceptions' classes
    missing += [f"skebflow.{n}" for n in skebflow.__all__ if n not in listed | exceptions]
    missing += [f"skebflow.datasets.{n}" for n in skebflow.datasets.__all__ if n not in listed]
    missing += [] if "ImputationReport" in listed else ["skebflow.estimators.ImputationReport"]
    assert missing == []


BROKEN_PAGE = """\
# A page with one broken reference of each kind

`skebflow.EBFlowDensity` and `skebflow.datasets.make_toy` exist;
`skebflow.EBFlowDensty` and `skebflow.no_such_module.thing` do not.
See `skebflow/estimators/_defaults.py` and `examples/no_such_example.py`,
[the user guide](user_guide.md), [a missing page](no_such_page.md),
![a missing picture](images/no_such_picture.png) and :doc:`no_such_doc`.

```python
skebflow.inside_a_code_block_is_not_checked
```
"""


def test_checkers_find_deliberately_broken_references() -> None:
    page = DOCS / "broken.md"  # never written: only its folder matters
    assert broken_names(BROKEN_PAGE) == ["skebflow.EBFlowDensty", "skebflow.no_such_module.thing"]
    assert broken_paths(BROKEN_PAGE) == ["examples/no_such_example.py"]
    assert broken_links(BROKEN_PAGE, page) == [
        "no_such_page.md",
        "images/no_such_picture.png",
        ":doc:`no_such_doc`",
    ]
