"""The documented catalogue is the code's catalogue."""
from pathlib import Path

from prober.model import CATALOGUE

ROOT = Path(__file__).parent.parent


def test_findings_doc_lists_every_code_with_its_severity():
    text = (ROOT / "docs" / "findings.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    documented = {row.split("`")[1]: row for row in rows}
    assert set(documented) == set(CATALOGUE)
    for code, info in CATALOGUE.items():
        assert f"| {info.severity}" in documented[code]


def test_no_product_text_cites_an_outside_document_by_the_word_seed():
    """Hints, messages, docs, the runbook and the chart describe failure modes in words."""
    import re
    word = re.compile(r"\bseed\b", re.I)
    files = [ROOT / "README.md", *(ROOT / "docs").rglob("*"), *(ROOT / "helm").rglob("*"),
             *(ROOT / "deploy").rglob("*"), *(ROOT / "prober").rglob("*.py")]
    hits = [f"{p.relative_to(ROOT)}:{n}" for p in files if p.is_file() and p.suffix != ".png"
            for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1) if word.search(line)]
    assert hits == []


def _apt_packages(text: str) -> list[str]:
    line = next(line for line in text.splitlines() if "apt-get install -y" in line and "nginx-light" in line)
    words = line.split("apt-get install -y", 1)[1].split("&&")[0].split()
    return [w for w in words if not w.startswith("-") and w != "\\"]


def test_readme_and_ci_install_the_same_debian_packages():
    """The README's one-line test command and .ci/run name one package list."""
    readme = _apt_packages((ROOT / "README.md").read_text())
    ci = _apt_packages((ROOT / ".ci" / "run").read_text().replace(">/dev/null", ""))
    assert sorted(readme) == sorted(ci)
