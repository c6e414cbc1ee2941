"""What every chapter page offers a reader, added at build time.

- A "Work with this chapter" box under each chapter's title: the chapter as a
  notebook to download, its exercise notebooks (from `exercises/NN_slug/`,
  copied into the site) and the chapter's line of the status page.
- The status page (`book/status.md`): its marker line is replaced by a table
  made from `book/_data/status.json` (written by measure_status.py here).
- `book/_static/course.css`: wide display math scrolls instead of running past
  the right edge of the page.

Chapters are found by name (`book/NN_slug`), so no chapter needs editing.
"""
from __future__ import annotations

import html
import json
import re
import shutil
from pathlib import Path

from sphinx.application import Sphinx

BOOK = Path(__file__).resolve().parents[1]
REPO = BOOK.parent
STATUS_JSON = BOOK / "_data" / "status.json"
STATUS_DOC = "book/status"
MARKER = "<!-- course-status-table -->"
CHAPTER = re.compile(r"^book/(\d\d)_[a-z0-9_]+$")
EXERCISE_TITLE = re.compile(r"^#\s+(Exercise\s+\d+\.\d+:.*)$", re.M)


def load_status() -> dict:
    if STATUS_JSON.exists():
        return json.loads(STATUS_JSON.read_text())
    return {"chapters": {}}


def exercises(slug: str) -> list[tuple[Path, str]]:
    """(notebook, "Exercise N.M: title") for each released exercise."""
    found = []
    for nb in sorted((REPO / "exercises" / slug).glob("ex*.ipynb")):
        title = nb.stem
        for cell in json.loads(nb.read_text())["cells"]:
            if cell["cell_type"] == "markdown":
                m = EXERCISE_TITLE.search("".join(cell["source"]))
                if m:
                    title = m.group(1).strip()
                    break
        found.append((nb, title))
    return found


def _seconds(value) -> str:
    return "not measured yet" if value is None else f"{value:.0f} s"


def status_line(slug: str, status: dict) -> str:
    """One chapter's status as plain words (used on the page and the table)."""
    entry = status.get("chapters", {}).get(slug)
    if not entry:
        return "run time not measured yet"
    parts = [f"runs in {_seconds(entry.get('cpu_wall_s'))} on 2 CPU cores"]
    if entry.get("cpu_wall_s") is None:
        parts = ["run time not measured yet"]
    if entry.get("gpu_wall_s") is not None:
        parts.append(f"{_seconds(entry['gpu_wall_s'])} on a GPU")
    line = ", ".join(parts)
    if entry.get("verified"):
        line += f"; outputs last verified {entry['verified']}"
    return line


def _box(slug: str, status: dict) -> str:
    esc = html.escape
    items = [
        f'<li><a href="{esc(slug)}.ipynb" download>Download this chapter as '
        f"a notebook ({esc(slug)}.ipynb)</a></li>"]
    exs = exercises(slug)
    if exs:
        links = "".join(
            f'<li><a href="../exercises/{esc(slug)}/{esc(nb.name)}" '
            f"download>{esc(title)}</a></li>" for nb, title in exs)
        items.append(
            "<li>Exercises (notebooks, graded on your machine with "
            '<code>make grade</code>; see <a href="students.html">For '
            f"students</a>):<ul>{links}</ul></li>")
    versions = ", ".join(
        f"{name} {status[key]}" for name, key in
        (("torch", "torch"), ("dlcourse", "dlcourse")) if status.get(key))
    items.append(
        f"<li>Status: {esc(status_line(slug, status))}"
        + (f" ({esc(versions)})" if versions else "")
        + '; <a href="status.html">all chapters</a>.</li>')
    return (
        '<aside class="admonition course-links" '
        'aria-label="Work with this chapter">'
        '<p class="admonition-title">Work with this chapter</p>'
        f'<ul>{"".join(items)}</ul></aside>')


def _fix_page(app: Sphinx, pagename: str, templatename: str, context: dict,
              doctree) -> None:
    """Console errors and an ARIA error every reader would get otherwise."""
    # sphinx-thebe registers its inline config script once per read phase,
    # and Jupyter Book has two: "const THEBE_JS_URL" declared twice.
    seen, scripts = set(), []
    for js in context.get("script_files", []):
        key = (getattr(js, "filename", js) or "",  # inline: None or ""
               repr(sorted(getattr(js, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            scripts.append(js)
    context["script_files"] = scripts
    # pydata-sphinx-theme falls back to default_mode on a first visit and
    # logs "Got invalid theme mode" when that is empty: follow the system.
    context.setdefault("default_mode", "auto")
    # docutils marks the bibliography role="list" but its entries
    # role="doc-biblioentry" (deprecated in DPUB-ARIA 1.1, no list item): a
    # list without items for a screen reader (axe: aria-required-children).
    if context.get("body"):
        context["body"] = context["body"].replace(
            'role="doc-biblioentry"', 'role="listitem"')


def _add_box(app: Sphinx, pagename: str, templatename: str, context: dict,
             doctree) -> None:
    m = CHAPTER.match(pagename)
    body = context.get("body")
    if not m or not body or "</h1>" not in body:
        return
    slug = pagename.split("/", 1)[1]
    box = _box(slug, load_status())
    context["body"] = body.replace("</h1>", "</h1>" + box, 1)


def _status_table(status: dict) -> str:
    rows = [
        "| Chapter | Run time, 2 CPU cores | CPU time | On a GPU "
        "| Outputs last verified | Measured by |",
        "|---|---|---|---|---|---|",
    ]
    for slug in chapter_slugs():
        entry = status.get("chapters", {}).get(slug, {})
        gpu = entry.get("gpu_wall_s")
        rows.append(
            f"| {{doc}}`{slug}` | {_seconds(entry.get('cpu_wall_s'))} "
            f"| {_seconds(entry.get('cpu_process_s'))} "
            f"| {'not recorded' if gpu is None else _seconds(gpu)} "
            f"| {entry.get('verified', 'not yet')} "
            f"| {entry.get('measured_by', '')} |")
    versions = (
        f"Verified with torch {status.get('torch', '?')} and dlcourse "
        f"{status.get('dlcourse', '?')} ({status.get('python', 'Python')}).")
    how = status.get("method", "")
    return "\n".join(rows) + "\n\n" + versions + (" " + how if how else "")


def chapter_slugs() -> list[str]:
    import yaml

    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    docs = [ch["file"] for part in toc.get("parts", [])
            for ch in part["chapters"]]
    return [d.split("/", 1)[1] for d in docs if CHAPTER.match(d)]


def _fill_status(app: Sphinx, docname: str, source: list[str]) -> None:
    if docname == STATUS_DOC and MARKER in source[0]:
        source[0] = source[0].replace(MARKER, _status_table(load_status()))


def _static_path(app: Sphinx, config) -> None:
    config.html_static_path.append(str(BOOK / "_static"))


def _copy(app: Sphinx, exc: Exception | None) -> None:
    """Chapter notebooks beside their pages, exercises under exercises/."""
    if exc is not None or app.builder.format != "html":
        return
    out = Path(app.outdir)
    for slug in chapter_slugs():
        nb = BOOK / f"{slug}.ipynb"
        if nb.exists():
            shutil.copy2(nb, out / "book" / nb.name)
        for ex, _ in exercises(slug):
            dst = out / "exercises" / slug
            dst.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ex, dst / ex.name)


def setup(app: Sphinx) -> dict:
    app.connect("config-inited", _static_path)
    app.add_css_file("course.css")
    app.connect("source-read", _fill_status)
    app.connect("html-page-context", _fix_page, priority=900)
    app.connect("html-page-context", _add_box)
    app.connect("build-finished", _copy)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
