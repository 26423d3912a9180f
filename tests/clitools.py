"""Running the recon command in this process and checking its one-line errors."""

from __future__ import annotations

from pathlib import Path

from recon.cli import main


def run(*argv) -> int:
    """``recon ARGV...``: its exit status (anything it raises fails the test: recon never shows a traceback)."""
    return main([str(a) for a in argv])


def expect_error(capsys, argv, pattern: str, out_dir: Path | None = None) -> str:
    """Exit status 2 and exactly one line on stderr, ``recon: error: ...`` containing ``pattern``; with
    ``out_dir``, no ``scene.json`` there. Returns the line."""
    code = run(*argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("recon: error: "), err
    assert pattern in err[0], err[0]
    if out_dir is not None:
        assert not (out_dir / "scene.json").exists()
    return err[0]
