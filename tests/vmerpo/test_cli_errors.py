"""Every foreseeable error of a verb is one line on stderr and exit 2; --debug re-raises."""

from __future__ import annotations

import pickle

import pytest

from vmerpo import cli


@pytest.mark.parametrize("exc, expect", [
    (ValueError("bad --out\nsecond line"), "error: bad --out"),
    (TypeError("spec field 'image_size' must be an int"), "error: TypeError: spec field 'image_size' must be an int"),
    (MemoryError(), "error: MemoryError (--debug shows the traceback)"),
    (pickle.UnpicklingError("Weights only load failed"), "error: UnpicklingError: Weights only load failed"),
    (RuntimeError("PytorchStreamReader failed reading zip archive"), "error: RuntimeError: PytorchStreamReader"),
])
def test_a_verbs_errors_are_one_line_with_exit_2(monkeypatch, capsys, exc, expect):
    import vmerpo.commands.repair as verb

    def run(args):
        raise exc

    monkeypatch.setattr(verb, "run", run)
    assert cli.main(["repair", "x.zarr"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("vmerpo repair: ") and expect in err, err
    with pytest.raises(type(exc)):
        cli.main(["--debug", "repair", "x.zarr"])


def test_a_bug_is_not_hidden(monkeypatch):
    """Errors that are not bad input (here an AttributeError) keep their traceback."""
    import vmerpo.commands.repair as verb

    def run(args):
        raise AttributeError("a bug")

    monkeypatch.setattr(verb, "run", run)
    with pytest.raises(AttributeError):
        cli.main(["repair", "x.zarr"])
