"""containers/Apptainer.def and requirements.lock: the image installs the locked stack with containers/install.sh.

Static checks of the definition (sections, exact base tag, labels and help carrying the locked versions, the
entry point, flash-attn off by default) and of the lock (every package pinned with hashes, pins satisfy
pyproject's ranges, runtime part free of test/bench packages). Then, since apptainer cannot run here, the slow
test does what `apptainer build` would: copies what %files copies, runs the %post install line in a clean venv
(the CPU machine takes the same torch 2.11.0 wheel), runs the %runscript and `virnucpro selftest --device cpu`
there, and the commands `predict`, `status`, `models` import with the runtime packages only.

spython (the Python parser of definition files) is not installable offline, so a small local parser of the
format is used: header `Key: value` lines, then `%section [args]` blocks up to the next section.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
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
LOCK = REPO / "requirements.lock"
SECTIONS = ("arguments", "files", "post", "environment", "runscript", "test", "labels", "help")
INSTALL_LINE = "bash /opt/virnucpro/containers/install.sh /opt/venv $flash"
EXTRAS_ONLY = ("transformers", "biopython", "pytest")  # what `predict`, `submit`, `models`, `selftest` never import
SHARED = Path(os.environ.get("VIRNUCPRO_SHARED", REPO.parent / "shared"))

sys.path.insert(0, str(REPO / "containers"))
import pins  # noqa: E402  (containers/pins.py: the lock reader install.sh and the GPU suite use)


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


@pytest.fixture(scope="module")
def lock():
    """name -> (section, version) of every pin in requirements.lock."""
    return {name: (section, version) for section, name, version, _ in pins.read_entries(LOCK)}


def _requirements(pyproject, extra: str | None = None) -> list[Requirement]:
    listed = pyproject["project"]["optional-dependencies"][extra] if extra else pyproject["project"]["dependencies"]
    return [Requirement(text) for text in listed]


def _rendered(definition, section: str) -> str:
    """A section with the {{ ARG }} templates filled from %arguments' defaults, as apptainer build does."""
    arguments = key_values(definition[1]["arguments"])
    body = definition[1][section]
    for name in re.findall(r"\{\{\s*(\w+)\s*\}\}", body):
        assert name in arguments, f"{{{{ {name} }}}} in %{section} has no default in %arguments"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: arguments[m.group(1)], body)


# ------------------------------------------------------------------------------------------ the lock


def test_lock_pins_every_package_with_hashes_and_torch_2_11(lock):
    entries = pins.read_entries(LOCK)
    assert len({name for _, name, _, _ in entries}) == len(entries), "a package is pinned twice"
    for _, name, version, text in entries:
        assert re.fullmatch(r"[0-9][0-9A-Za-z.+!-]*", version), (name, version)
        assert "--hash=sha256:" in text, f"{name} has no hash"
    assert lock["torch"] == ("runtime", "2.11.0")
    assert "flash-attn" not in lock


def test_lock_satisfies_pyproject_and_keeps_extras_out_of_the_runtime_part(lock, pyproject):
    for requirement in _requirements(pyproject):
        section, version = lock[pins.normalize(requirement.name)]
        assert section == "runtime", f"{requirement.name} is a runtime dependency but pinned among the extras"
        assert Version(version) in requirement.specifier, (requirement, version)
    for extra in ("test", "bench"):
        for requirement in _requirements(pyproject, extra):
            assert Version(lock[pins.normalize(requirement.name)][1]) in requirement.specifier, (requirement, extra)
    for name in EXTRAS_ONLY:
        assert lock[name][0] == "extras", f"{name} must not be in the image (runtime part of the lock)"
    build_backend = Requirement(pyproject["build-system"]["requires"][0])
    assert lock[build_backend.name][0] == "runtime", "install.sh builds virnucpro with the lock's setuptools"


def test_pins_requirements_splits_the_lock_at_the_extras_mark(lock, tmp_path):
    runtime = pins.requirements(LOCK, "runtime", [])
    every = pins.requirements(LOCK, "all", ["nvidia-*", "torch"])
    names = lambda text: set(re.findall(r"^([a-z0-9-]+)==", text, re.M))  # noqa: E731
    assert names(runtime) == {name for name, (section, _) in lock.items() if section == "runtime"}
    assert names(every) == set(lock) - {"torch"} - {name for name in lock if name.startswith("nvidia-")}
    assert "transformers" not in names(runtime) and "--hash=sha256:" in runtime


def test_pins_check_names_what_differs(tmp_path, capsys):
    fake = tmp_path / "requirements.lock"
    fake.write_text("# --- section: runtime ---\npytest==0.0.1 \\\n    --hash=sha256:00\n"
                    "not-a-package-here==1.0 \\\n    --hash=sha256:00\n")
    assert pins.check(fake, "runtime", exact=False) == 1
    err = capsys.readouterr().err
    assert "pytest" in err and "(lock: 0.0.1)" in err and "not-a-package-here missing" in err
    import pytest as installed_pytest

    fake.write_text(f"pytest=={installed_pytest.__version__} \\\n    --hash=sha256:00\n")
    assert pins.check(fake, "runtime", exact=False) == 0
    assert pins.check(fake, "runtime", exact=True) == 1  # this environment holds much more than pytest


# ------------------------------------------------------------------------------------------ the definition


def test_base_is_an_exact_python_tag_and_labels_carry_the_locked_versions(definition, lock, pyproject):
    header, sections = definition
    assert header["Bootstrap"] == "docker"
    match = re.fullmatch(r"python:(\d+\.\d+\.\d+)-slim-(bookworm|trixie)", header["From"])
    assert match, f"base must be an exact python:X.Y.Z-slim tag, not {header['From']}"
    labels = key_values(sections["labels"])
    cuda = ".".join(lock["cuda-toolkit"][1].split(".")[:2])
    expected = {"BaseImage": header["From"], "Python": match.group(1), "Torch": lock["torch"][1], "CUDA": cuda,
                "Version": pyproject["project"]["version"]}
    assert {key: labels.get(key) for key in expected} == expected
    assert pyproject["project"]["version"] == virnucpro.__version__
    help_text = sections["help"]
    for text in (f"virnucpro {virnucpro.__version__}", f"Python {match.group(1)}", f"torch {lock['torch'][1]}",
                 f"CUDA {cuda}"):
        assert text in help_text, f"%help does not say {text!r}"


def test_all_sections_present(definition):
    _, sections = definition
    missing = [name for name in SECTIONS if name not in sections]
    assert not missing, f"missing sections: {missing}"


def test_files_copy_what_install_sh_needs(definition, pyproject):
    copied = _copied_files(definition)
    for source in ("pyproject.toml", "requirements.lock", "containers/install.sh", "containers/pins.py",
                   "virnucpro", pyproject["project"]["readme"]):
        assert copied.get(source) == f"/opt/virnucpro/{source}", f"%files must copy {source}"


def test_post_installs_only_through_install_sh(definition):
    post = definition[1]["post"]
    assert [line.strip() for line in post.splitlines()].count(INSTALL_LINE) == 1
    assert "pip install" not in post and "pip3 install" not in post, "every install step lives in install.sh"


def test_flash_attn_only_behind_a_build_argument(definition, pyproject):
    arguments = key_values(definition[1]["arguments"])
    assert arguments["FLASH_ATTN"] == "0"
    flash_extra = next(r for r in _requirements(pyproject, "flash") if r.name == "flash-attn")
    assert Version(arguments["FLASH_ATTN_VERSION"]) in flash_extra.specifier
    post = definition[1]["post"]
    assert re.search(r'if \[ "\{\{ FLASH_ATTN \}\}" = "1" \]; then\s+flash="--flash-attn \{\{ FLASH_ATTN_VERSION \}\}"',
                     post)
    assert 'if [ "0" = "1" ]; then' in _rendered(definition, "post")  # so by default $flash stays empty
    assert "off unless" in key_values(definition[1]["labels"])["FlashAttn"]


def test_runscript_prints_help_without_arguments_and_passes_them_on(definition, pyproject):
    commands = [line.strip() for line in definition[1]["runscript"].splitlines()
                if line.strip() and not line.strip().startswith("#")]
    assert commands == ['if [ "$#" -eq 0 ]; then', "exec virnucpro --help", "fi", 'exec virnucpro "$@"']
    assert pyproject["project"]["scripts"]["virnucpro"] == "virnucpro.cli:main"
    assert "export PATH=/opt/venv/bin:$PATH" in definition[1]["environment"]


def test_test_section_runs_selftest(definition):
    lines = [line.strip() for line in definition[1]["test"].splitlines()]
    assert "virnucpro selftest" in lines


def test_models_baked_on_request_or_bind_mounted(definition):
    arguments = key_values(definition[1]["arguments"])
    assert arguments["MODELS"] == "0"
    load_catalog().select([arguments["MODEL_SET"]])  # a group or model the catalog knows
    post = definition[1]["post"]
    assert re.search(r'if \[ "\{\{ MODELS \}\}" = "1" \]; then\s+/opt/venv/bin/virnucpro models fetch '
                     r'--dir /opt/virnucpro-models', post)
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


def test_helper_scripts_are_valid_shell():
    for script in ("containers/install.sh", "scripts/gpu_suite.sh", "scripts/gpu_wheels.sh"):
        result = subprocess.run(["bash", "-n", str(REPO / script)], capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, (script, result.stderr)


def test_parser_rejects_what_it_should():
    header, sections = parse_definition("Bootstrap: docker\nFrom: x\n%post\n  echo hi\n%runscript\n  exec a\n")
    assert header == {"Bootstrap": "docker", "From": "x"}
    assert sections == {"post": "  echo hi", "runscript": "  exec a"}
    with pytest.raises(AssertionError, match="appears twice"):
        parse_definition("%post\n%post\n")


def _copied_files(definition) -> dict[str, str]:
    copied = {}
    for line in definition[1]["files"].splitlines():
        if line.strip():
            source, destination = line.split()
            assert (REPO / source).exists(), f"%files copies {source}, which is not in the repository"
            copied[source] = destination
    return copied


# ------------------------------------------------------------------------------------------ the install itself


@pytest.mark.slow
def test_post_install_in_a_clean_venv_then_selftest(definition, tmp_path):
    """What `apptainer build` + `apptainer test` do, minus the base image: a venv from this machine's Python
    instead of python:3.12 (the lock holds for both), the same files, the same install script and arguments."""
    root = tmp_path / "root"  # stands for the image's /
    for source, destination in _copied_files(definition).items():
        target = root / destination.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if (REPO / source).is_dir() else shutil.copy2)(REPO / source, target)
    install = _rendered(definition, "post").replace("/opt/", f"{root}/opt/")
    command = next(line.strip() for line in install.splitlines() if "containers/install.sh" in line)
    env = {**os.environ, "PYTHON": sys.executable, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("PYTHONPATH", None)
    venv = root / "opt" / "venv"
    try:
        started = time.perf_counter()
        _run(f"flash=''; {command}", env, timeout=1500)
        installed = time.perf_counter() - started
        env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
        runscript = _rendered(definition, "runscript")
        assert "usage: virnucpro" in _run(runscript, env, shell="sh")
        assert _run(runscript, env, shell="sh", args=["--version"]).strip() == f"virnucpro {virnucpro.__version__}"
        selftest = ["virnucpro", "selftest", "--device", "cpu"]
        if (SHARED / "models" / "dnabert-s" / "tokenizer.json").exists():
            selftest += ["--dnabert-tokenizer", str(SHARED / "models" / "dnabert-s")]
        report = _run(selftest, env, timeout=300)
        assert "selftest passed" in report, report
        _run(["virnucpro", "demo", "--out", str(tmp_path / "demo")], env, timeout=300)  # predict, end to end
        assert "complete" in _run(["virnucpro", "status", str(tmp_path / "demo" / "run")], env).lower()
        _run(["virnucpro", "models", "list"], env)
        _run(["python", "-c", "import virnucpro.slurm.submit, virnucpro.slurm.tasks"], env)  # submit's imports
        print(f"install {installed:.0f} s, whole test {time.perf_counter() - started:.0f} s\n{report}")
    finally:
        shutil.rmtree(venv, ignore_errors=True)  # ~5 GB of torch + CUDA wheels


def _run(command, env, timeout=120, shell="bash", args=()) -> str:
    argv = [shell, "-c", command, "runscript", *args] if isinstance(command, str) else list(command)
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{argv} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout
