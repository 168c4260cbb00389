"""The repository stands on its own: no file refers to the research-notes folder outside it, and
every `docs/algorithms.md §x` / `docs/memory-model.md §x` citation names a section that exists."""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[2]
NOTES_FOLDER = "shared" + "/"   # spelled in two parts so that this file does not match itself
TREES = ["Sources", "Tests", "docs", "schemas", "benchmarks", "python", "README.md"]
SUFFIXES = {".swift", ".py", ".md", ".proto", ".c", ".h", ".sh", ".txt", ".toml", ".json", ".yaml", ".yml"}
DOCS = {"algorithms": ROOT / "docs" / "algorithms.md", "memory-model": ROOT / "docs" / "memory-model.md"}


def tree_files():
    for name in TREES:
        p = ROOT / name
        if p.is_file():
            yield p
            continue
        for f in sorted(p.rglob("*")):
            if f.is_file() and f.suffix in SUFFIXES and "__pycache__" not in f.parts and "_pb2" not in f.name:
                yield f


def headings(path):
    """Section numbers of a doc's headings: `## 2. Title` → '2', `### 1.4 Title` → '1.4'."""
    out = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^#{2,4}\s+(\d+(?:\.\d+)*)\.?\s", line)
        if m:
            out.add(m.group(1))
    return out


def citations(text):
    """(doc, section) pairs: every §n after a `docs/<doc>.md` mention, up to the next doc mention
    or the end of the parenthesis/line."""
    pairs = []
    for m in re.finditer(r"docs/(algorithms|memory-model)\.md", text):
        tail = text[m.end():]
        stop = re.search(r"[)\n]|docs/\w", tail)
        segment = tail[: stop.start()] if stop else tail
        for s in re.findall(r"§\s?(\d+(?:\.\d+)*)", segment):
            pairs.append((m.group(1), s))
    return pairs


def test_no_file_refers_to_the_shared_folder():
    offenders = []
    for f in tree_files():
        for i, line in enumerate(f.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if NOTES_FOLDER in line:
                offenders.append(f"{f.relative_to(ROOT)}:{i}: {line.strip()}")
    assert offenders == [], "files refer to the notes folder outside the repository:\n" + "\n".join(offenders)


def test_every_cited_section_exists():
    known = {name: headings(path) for name, path in DOCS.items()}
    assert "1.4" in known["algorithms"] and "5.1" in known["memory-model"]
    missing, count = [], 0
    for f in tree_files():
        for doc, sec in citations(f.read_text(encoding="utf-8", errors="replace")):
            count += 1
            if sec not in known[doc]:
                missing.append(f"{f.relative_to(ROOT)}: docs/{doc}.md §{sec}")
    assert count > 100, f"only {count} citations found; the scanner is broken"
    assert missing == [], "citations of sections that do not exist:\n" + "\n".join(sorted(set(missing)))


def test_citation_scanner_reads_lists_and_stops_at_the_next_doc():
    text = "(docs/algorithms.md §2.3 step 7, §2.4; docs/memory-model.md §5.1)\n"
    assert citations(text) == [("algorithms", "2.3"), ("algorithms", "2.4"), ("memory-model", "5.1")]
