"""CONTRIBUTING.rst names only ``make`` targets that the Makefile has."""

import os
import re

from tests.support.processes import ROOT

#: Named in CONTRIBUTING.rst before the Makefile has them (none now). Take a target out
#: of here when it lands.
NOT_YET: set = set()


def _read(name: str) -> str:
    with open(os.path.join(ROOT, name), encoding="utf-8") as fh:
        return fh.read()


def makefile_targets() -> set:
    return set(re.findall(r"^([a-z][a-z0-9-]*):", _read("Makefile"), re.M))


def test_every_make_target_named_in_contributing_exists():
    named = set(re.findall(r"``make ([a-z][a-z0-9-]*)", _read("CONTRIBUTING.rst")))
    assert "test" in named and "dist-check" in named
    assert named - NOT_YET <= makefile_targets()


def test_targets_still_awaited_are_not_in_the_makefile_yet():
    landed = NOT_YET & makefile_targets()
    assert not landed, f"the Makefile has {sorted(landed)} now: take them out of NOT_YET"
