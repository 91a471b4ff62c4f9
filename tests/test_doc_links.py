"""Every Markdown file or anchor named in the code and the documentation exists: relative links
in *.md files (resolved from the file's folder), and `path.md` / `path.md#anchor` mentions in
code, configs and Markdown text (resolved from the file's folder, then from the repository root).
Anchors are GitHub's heading slugs."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP_DIRS = {".git", ".venv", "build", "install", "log", "results", "demo_out", "node_modules", "__pycache__"}
CODE_SUFFIXES = {".py", ".sh", ".yaml", ".yml", ".xml", ".cfg", ".toml", ".md"}
# Files that commands write (not documentation): named in code and docs as outputs.
GENERATED = {"report.md", "results.md"}
OUTPUT_DIRS = ("demo_out/", "results/", "/tmp/", "RUN/", "OUT/")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
MENTION = re.compile(r"(?<![\w/.-])((?:\.\.?/)?[\w./-]*[\w-]+\.md)(#[\w-]+)?")


def _files() -> list[Path]:
    out = []
    for p in ROOT.rglob("*"):
        if p.is_file() and not (set(p.relative_to(ROOT).parts[:-1]) & SKIP_DIRS) and (
                p.suffix in CODE_SUFFIXES or p.name in ("Makefile", "run")):
            out.append(p)
    return sorted(out)


def slugs(md: Path) -> set[str]:
    """GitHub's anchors for the headings of `md` (duplicates get -1, -2, ...)."""
    seen: dict[str, int] = {}
    out = set()
    in_code = False
    for line in md.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if in_code or not m:
            continue
        # emphasis markers go; an underscore inside a word (policy_node) is text, as on GitHub
        text = re.sub(r"`|\*\*|\*|(?<!\w)_(?=\w)|(?<=\w)_(?!\w)|\[([^\]]*)\]\([^)]*\)",
                      lambda k: k.group(1) or "", m.group(1))
        slug = re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def _resolve(src: Path, target: str) -> Path | None:
    for base in (src.parent, ROOT):
        p = (base / target).resolve()
        if p.exists():
            return p
    return None


def _problems() -> list[str]:
    problems = []
    for f in _files():
        if f == Path(__file__).resolve():
            continue
        text = f.read_text(encoding="utf-8", errors="replace")
        refs: list[tuple[str, str | None, bool]] = []
        if f.suffix == ".md":
            for target in LINK.findall(text):
                if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("mailto:"):
                    continue  # URLs
                path, _, anchor = target.partition("#")
                refs.append((path, anchor or None, True))
        for m in MENTION.finditer(text):
            refs.append((m.group(1), m.group(2)[1:] if m.group(2) else None, False))
        rel = f.relative_to(ROOT)
        for path, anchor, is_link in refs:
            if Path(path).name in GENERATED or path.startswith(OUTPUT_DIRS):
                continue
            if is_link and path == "":  # an anchor in the same file
                target = f
            else:
                found = (f.parent / path).resolve() if is_link else _resolve(f, path)
                if found is None or not found.exists():
                    problems.append(f"{rel}: {path} does not exist")
                    continue
                target = found
            if anchor and target.suffix == ".md" and anchor not in slugs(target):
                problems.append(f"{rel}: {path}#{anchor}: no such heading in {target.relative_to(ROOT)}")
    return problems


def test_slugs_follow_github():
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        md = Path(d) / "x.md"
        md.write_text("# The `vmerpo` store: contract 1\n## Experimental options\n## Experimental options\n"
                      "```\n# not a heading\n```\n")
        assert slugs(md) == {"the-vmerpo-store-contract-1", "experimental-options", "experimental-options-1"}


def test_every_markdown_path_and_anchor_named_in_code_and_docs_exists():
    problems = _problems()
    assert not problems, "dead references:\n" + "\n".join(problems)
