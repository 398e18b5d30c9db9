#!/usr/bin/env python3
"""Read requirements.lock (standard library only: it runs before anything is installed).

    pins.py requirements LOCK runtime|all [--exclude GLOB ...]   print that part of the lock as a requirements file
    pins.py check LOCK runtime|all [--exact]                     compare this Python's packages with the lock

`check` prints one line per pinned package and exits 1 naming every package that is missing or at another
version (a local build tag such as torch's "+cu130" is ignored: 2.11.0+cu130 is the 2.11.0 the lock pins).
`--exact` also fails on installed packages the lock does not list (pip itself and virnucpro excepted): an
environment made by containers/install.sh holds the lock and nothing else.
"""

from __future__ import annotations

import argparse
import fnmatch
import importlib.metadata
import re
import sys
from pathlib import Path

EXTRAS_MARK = "# --- section: extras"
ALWAYS_ALLOWED = {"pip", "virnucpro"}


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_entries(lock: Path) -> list[tuple[str, str, str, str]]:
    """(section, name, version, entry text) for each pin, in file order; section is runtime or extras."""
    return parse_entries(lock.read_text())


def parse_entries(text: str) -> list[tuple[str, str, str, str]]:
    """As read_entries, from the text of a lock or of `uv pip compile` output (all of it "runtime")."""
    found = []
    section = "runtime"
    entry = None
    for line in text.splitlines():
        if line.startswith(EXTRAS_MARK):
            section = "extras"
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", line)
        if match:
            entry = [section, normalize(match.group(1)), match.group(2), line]
            found.append(entry)
        elif entry is not None and line.startswith(" "):
            entry[3] += "\n" + line
        else:
            entry = None
    return [tuple(e) for e in found]


def selected(lock: Path, part: str) -> list[tuple[str, str, str, str]]:
    if part not in ("runtime", "all"):
        raise SystemExit(f"pins.py: part must be runtime or all, not {part!r}")
    return [e for e in read_entries(lock) if part == "all" or e[0] == "runtime"]


def requirements(lock: Path, part: str, exclude: list[str]) -> str:
    kept = [e for e in selected(lock, part) if not any(fnmatch.fnmatch(e[1], glob) for glob in exclude)]
    return "".join(entry + "\n" for _, _, _, entry in kept)


def installed_versions() -> dict[str, str]:
    versions: dict[str, str] = {}
    for dist in importlib.metadata.distributions():  # first on sys.path wins, as for imports
        name = dist.metadata["Name"]
        if name:
            versions.setdefault(normalize(name), dist.version)
    return versions


def check(lock: Path, part: str, exact: bool) -> int:
    pinned = {name: version for _, name, version, _ in selected(lock, part)}
    installed = installed_versions()
    problems = []
    print(f"{'package':28} {'lock':14} installed")
    for name, version in pinned.items():
        have = installed.get(name)
        ok = have is not None and have.split("+", 1)[0] == version
        print(f"{name:28} {version:14} {have or 'MISSING'}{'' if ok else '   <-- MISMATCH'}")
        if not ok:
            problems.append(f"{name} {have or 'missing'} (lock: {version})")
    if exact:
        unlisted = sorted(set(installed) - set(pinned) - ALWAYS_ALLOWED)
        problems += [f"{name} {installed[name]} (not in the lock)" for name in unlisted]
    if problems:
        print(f"pins.py: {len(problems)} package(s) differ from {lock}: " + "; ".join(problems), file=sys.stderr)
        return 1
    print(f"pins.py: all {len(pinned)} {part} pins of {lock.name} installed (python {sys.version.split()[0]})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)
    show = sub.add_parser("requirements")
    show.add_argument("--exclude", nargs="*", default=[], help="glob patterns of package names to leave out")
    verify = sub.add_parser("check")
    verify.add_argument("--exact", action="store_true", help="also fail on installed packages the lock lacks")
    for command in (show, verify):
        command.add_argument("lock", type=Path)
        command.add_argument("part", choices=("runtime", "all"))
    args = parser.parse_args(argv)
    if args.action == "requirements":
        sys.stdout.write(requirements(args.lock, args.part, args.exclude))
        return 0
    return check(args.lock, args.part, args.exact)


if __name__ == "__main__":
    sys.exit(main())
