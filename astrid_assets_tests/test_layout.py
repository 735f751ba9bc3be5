"""The package stays easy to read: no module over 500 lines, and README.md's layout names every module.

Alembic's revision files (``io/migrations/versions/``, one per schema change) are listed by their folder.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "astrid_assets"
MAX_LINES = 500


def modules() -> list[Path]:
    return sorted(path for path in PACKAGE.rglob("*.py")
                  if path.name != "__init__.py" and "versions" not in path.relative_to(PACKAGE).parts)


def test_no_module_is_over_500_lines() -> None:
    long = {str(path.relative_to(ROOT)): n for path in modules()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: split them by concept: {long}"


def test_the_readme_layout_names_every_module() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    layout = readme[readme.index("## Layout"):readme.index("\n## ", readme.index("## Layout") + 1)]
    missing = [str(path.relative_to(ROOT)) for path in modules() if path.name not in layout]
    assert not missing, f"README.md's layout does not name: {missing}"
