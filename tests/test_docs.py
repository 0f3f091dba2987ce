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
