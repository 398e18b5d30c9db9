"""containers/Apptainer.def: sections, entry point, project install at the pyproject version, pins that agree
with pyproject's bounds, shell syntax of the scripts.

spython (the Python parser of definition files) is not installable offline, so a small local parser of the
format is used: header `Key: value` lines, then `%section [args]` blocks up to the next section.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

import virnucpro
from virnucpro.store.catalog import load_catalog

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    tomllib = pytest.importorskip("tomli")

REPO = Path(__file__).resolve().parents[1]
DEF_FILE = REPO / "containers" / "Apptainer.def"
SECTIONS = ("arguments", "files", "post", "environment", "runscript", "test", "labels", "help")


def parse_definition(text: str) -> tuple[dict[str, str], dict[str, str]]:
    """(header, sections): header keys as written; section name -> body (text up to the next %section)."""
    header: dict[str, str] = {}
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        match = re.match(r"^%(\w+)\b", line)
        if match:
            name = match.group(1).lower()
            assert name not in sections, f"section %{name} appears twice"
            current = sections[name] = []
        elif current is not None:
            current.append(line)
        elif line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition(":")
            assert sep, f"header line without 'Key: value': {line!r}"
            header[key.strip()] = value.strip()
    return header, {name: "\n".join(body) for name, body in sections.items()}


def key_values(body: str) -> dict[str, str]:
    """%arguments (KEY=value) and %labels (Key value) bodies."""
    pairs = {}
    for line in body.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=") if "=" in line.split()[0] else line.partition(" ")
            pairs[key] = value.strip()
    return pairs


@pytest.fixture(scope="module")
def definition():
    return parse_definition(DEF_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def pyproject():
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def _requirement(pyproject, name: str, extra: str | None = None) -> Requirement:
    listed = pyproject["project"]["optional-dependencies"][extra] if extra else pyproject["project"]["dependencies"]
    return next(r for r in map(Requirement, listed) if r.name == name)


def _rendered(definition, section: str) -> str:
    """A section with the {{ ARG }} templates filled from %arguments' defaults, as apptainer build does."""
    arguments = key_values(definition[1]["arguments"])
    body = definition[1][section]
    for name in re.findall(r"\{\{\s*(\w+)\s*\}\}", body):
        assert name in arguments, f"{{{{ {name} }}}} in %{section} has no default in %arguments"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: arguments[m.group(1)], body)


def test_header_uses_a_cuda_pytorch_image_within_the_torch_bound(definition, pyproject):
    header, _ = definition
    assert header["Bootstrap"] == "docker"
    match = re.fullmatch(r"pytorch/pytorch:(\d+\.\d+\.\d+)-cuda(\d+\.\d+)-cudnn(\d+)-runtime", header["From"])
    assert match, header["From"]
    torch_version = Version(match.group(1))
    assert torch_version in _requirement(pyproject, "torch").specifier
    labels = key_values(definition[1]["labels"])
    assert labels["Torch"] == match.group(1) and labels["BaseImage"] == header["From"]


def test_all_sections_present(definition):
    _, sections = definition
    missing = [name for name in SECTIONS if name not in sections]
    assert not missing, f"missing sections: {missing}"
    assert sections["help"].strip()


def test_runscript_execs_the_installed_entry_point(definition, pyproject):
    commands = [line.strip() for line in definition[1]["runscript"].splitlines()
                if line.strip() and not line.strip().startswith("#")]
    assert commands == ['exec virnucpro "$@"']
    assert pyproject["project"]["scripts"]["virnucpro"] == "virnucpro.cli:main"


def test_post_installs_this_repository_at_its_version(definition, pyproject):
    _, sections = definition
    copied = {}
    for line in sections["files"].splitlines():
        if line.strip():
            source, destination = line.split()
            assert (REPO / source).exists(), f"%files copies {source}, which is not in the repository"
            copied[source] = destination
    assert copied["pyproject.toml"] == "/opt/virnucpro/pyproject.toml"
    assert copied["virnucpro"] == "/opt/virnucpro/virnucpro"
    assert copied.get(pyproject["project"]["readme"]), "the readme named in pyproject.toml must be copied"
    post = _rendered(definition, "post")
    assert re.search(r"pip install (--\S+ \S+ )*/opt/virnucpro\b", post)
    version = pyproject["project"]["version"]
    assert version == virnucpro.__version__
    assert f'assert v == "{version}"' in post
    assert key_values(sections["labels"])["Version"] == version


def test_flash_attn_pin_agrees_with_the_flash_extra(definition, pyproject):
    arguments = key_values(definition[1]["arguments"])
    pinned = Version(arguments["FLASH_ATTN_VERSION"])
    assert pinned in _requirement(pyproject, "flash-attn", extra="flash").specifier
    assert key_values(definition[1]["labels"])["FlashAttnPin"] == str(pinned)
    post = definition[1]["post"]
    assert "flash-attention/releases/download/v{{ FLASH_ATTN_VERSION }}" in post
    assert re.search(r"if python -m pip install .*flash|if .*pip install .*\$\{url\}", post), \
        "the flash-attn install must be guarded (not fatal)"


def test_models_baked_on_request_or_bind_mounted(definition):
    arguments = key_values(definition[1]["arguments"])
    assert arguments["MODELS"] == "0"
    load_catalog().select([arguments["MODEL_SET"]])  # a group or model the catalog knows
    post = definition[1]["post"]
    assert re.search(r'if \[ "\{\{ MODELS \}\}" = "1" \]; then\s+virnucpro models fetch --dir /opt/virnucpro-models',
                     post)
    environment = definition[1]["environment"]
    assert "export VIRNUCPRO_MODELS" in environment and "/models" in environment
    assert "virnucpro models verify" in definition[1]["test"]


@pytest.mark.parametrize("section, shell", [("post", "bash"), ("test", "bash"), ("runscript", "sh"),
                                            ("environment", "sh")])
def test_scripts_are_valid_shell(definition, section, shell, tmp_path):
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} not installed")
    script = tmp_path / f"{section}.sh"
    script.write_text(_rendered(definition, section) + "\n")
    result = subprocess.run([shell, "-n", str(script)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


def test_parser_rejects_what_it_should():
    header, sections = parse_definition("Bootstrap: docker\nFrom: x\n%post\n  echo hi\n%runscript\n  exec a\n")
    assert header == {"Bootstrap": "docker", "From": "x"}
    assert sections == {"post": "  echo hi", "runscript": "  exec a"}
    with pytest.raises(AssertionError, match="appears twice"):
        parse_definition("%post\n%post\n")
