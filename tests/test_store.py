"""Model store: downloads over a real HTTP server on 127.0.0.1 (Range support, fault injection), the lock file,
in-place torch hub / HF cache layouts, resolution for the engine, and the safetensors conversion."""

from __future__ import annotations

import argparse
import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from virnucpro.cli import main as cli_main
from virnucpro.config import ModelPaths
from virnucpro.errors import ModelError
from virnucpro.store.catalog import StoreLocations, load_catalog
from virnucpro.store.fetch import download, fetch_models, parse_pins
from virnucpro.store.lockfile import LOCK_NAME, Lock, verify_file
from virnucpro.store.resolve import resolve_model_paths

REPO = Path(__file__).resolve().parents[1]
HF = "huggingface/zhihan1996/DNABERT-S/resolve/main"


# ------------------------------------------------------------------------------------------ loopback server


@dataclass
class Served:
    files: dict[str, bytes] = field(default_factory=dict)  # URL path (no leading /) -> body
    cut_after: dict[str, int] = field(default_factory=dict)  # path -> bytes sent before closing (once)
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)


def _handler(served: Served):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep pytest output clean
            pass

        def do_GET(self):
            path = self.path.lstrip("/")
            served.requests.append((path, self.headers.get("Range")))
            if path not in served.files:
                self.send_error(404)
                return
            body = served.files[path]
            start = int(self.headers["Range"][len("bytes="):].rstrip("-")) if self.headers.get("Range") else 0
            if start >= len(body) and start:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            self.send_header("Content-Length", str(len(body) - start))
            self.end_headers()
            cut = served.cut_after.pop(path, None)
            self.wfile.write(body[start:] if cut is None else body[start:start + cut])
            if cut is not None:
                self.wfile.flush()
                self.close_connection = True

    return Handler


@pytest.fixture()
def server():
    served = Served()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(served))
    httpd.timeout = 5
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    served.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield served
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def _blob(size: int, seed: int) -> bytes:
    return bytes((i * 31 + seed * 7 + (i >> 8)) % 251 for i in range(size))


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _locations(models_dir: Path, server: Served | None = None, **env) -> StoreLocations:
    """Isolated from the developer's own caches: TORCH_HOME / HF_HOME only where a test sets them."""
    env.setdefault("XDG_CACHE_HOME", str(models_dir.parent / "no-cache"))
    return StoreLocations.from_environ(models_dir, env=env, mirrors=[server.url] if server else [])


def _resolve_classifier(chunk_length: int, models_dir: Path) -> Path:
    """The store's published classifier for `chunk_length` (ESM-2 and DNABERT-S given as explicit paths)."""
    explicit = models_dir / "explicit"
    explicit.mkdir(exist_ok=True)
    (explicit / "esm.pt").write_bytes(b"e")
    chosen = ModelPaths(esm=str(explicit / "esm.pt"), dnabert=str(explicit))
    return Path(resolve_model_paths(chosen, _locations(models_dir), chunk_length=chunk_length).classifier)


def _serve_classifiers(server: Served) -> dict[str, bytes]:
    bodies = {"300_model.pth": _blob(3000, 1), "500_model.pth": _blob(5000, 2)}
    for name, body in bodies.items():
        server.files[f"github/{name}"] = body
    return bodies


def _serve_dnabert(server: Served) -> dict[str, bytes]:
    bodies = {"config.json": b'{"hidden_size": 768}', "pytorch_model.bin": _blob(7000, 3),
              "tokenizer.json": b"{}", "tokenizer_config.json": b"{}"}
    for name, body in bodies.items():
        server.files[f"{HF}/{name}"] = body
    return bodies


def _catalog(*names):
    return load_catalog().select(list(names))


# ------------------------------------------------------------------------------------------ fetch


def test_fresh_fetch_writes_files_and_lock(tmp_path, server):
    bodies = {**_serve_classifiers(server), **_serve_dnabert(server)}
    outcomes = fetch_models(_catalog("classifier-300", "classifier-500", "dnabert-s"), _locations(tmp_path, server),
                            retry_delay=0)
    assert {o.status for o in outcomes} == {"downloaded"}
    lock = json.loads((tmp_path / LOCK_NAME).read_text())
    for name, body in bodies.items():
        folder = "classifier" if name.endswith(".pth") else "dnabert-s"
        assert (tmp_path / folder / name).read_bytes() == body
        assert lock["files"][f"{folder}/{name}"]["sha256"] == _sha(body)
        assert lock["files"][f"{folder}/{name}"]["url"].startswith(server.url)
    assert not list(tmp_path.rglob("*.part")) and not list(tmp_path.rglob("*.tmp"))

    again = fetch_models(_catalog("classifier-500"), _locations(tmp_path, server))
    assert [o.status for o in again] == ["present"]
    assert len(server.requests) == len(bodies)  # nothing downloaded twice


def test_interrupted_download_resumes_with_range(tmp_path, server):
    body = _serve_classifiers(server)["500_model.pth"]
    server.cut_after["github/500_model.pth"] = 1800
    dest = tmp_path / "classifier" / "500_model.pth"
    with pytest.raises(ModelError, match="500_model.pth.part is kept"):
        download(f"{server.url}/github/500_model.pth", dest, attempts=1, retry_delay=0, timeout=5)
    part = dest.with_name("500_model.pth.part")
    assert part.stat().st_size == 1800 and not dest.exists()

    fetch_models(_catalog("classifier-500"), _locations(tmp_path, server), retry_delay=0)
    assert server.requests[-1] == ("github/500_model.pth", "bytes=1800-")
    assert dest.read_bytes() == body and not part.exists()
    assert Lock.load(tmp_path).entries["classifier/500_model.pth"].sha256 == _sha(body)


def test_retry_within_one_fetch_continues_the_part(tmp_path, server):
    body = _serve_classifiers(server)["300_model.pth"]
    server.cut_after["github/300_model.pth"] = 1000
    digest = download(f"{server.url}/github/300_model.pth", tmp_path / "300_model.pth", attempts=3, retry_delay=0,
                      timeout=5)
    assert digest == _sha(body) and (tmp_path / "300_model.pth").read_bytes() == body
    assert [r for _, r in server.requests] == [None, "bytes=1000-"]


def test_wrong_pinned_checksum_leaves_no_file(tmp_path, server):
    _serve_classifiers(server)
    pins = parse_pins([f"500_model.pth={'ab' * 32}"])
    with pytest.raises(ModelError, match=r"500_model.pth.*does not match the expected abab"):
        fetch_models(_catalog("classifier-500"), _locations(tmp_path, server), pins, retry_delay=0)
    assert not list((tmp_path / "classifier").iterdir())


def test_pins_file_in_sha256sum_format(tmp_path, server):
    body = _serve_classifiers(server)["300_model.pth"]
    pins_file = tmp_path / "pins.txt"
    pins_file.write_text(f"# pinned\n{_sha(body)} *300_model.pth\n")
    outcomes = fetch_models(_catalog("classifier-300"), _locations(tmp_path / "m", server), parse_pins([], pins_file))
    assert outcomes[0].status == "downloaded"
    with pytest.raises(ModelError, match="not a sha256"):
        parse_pins(["300_model.pth=xyz"])


def test_404_is_a_clear_error(tmp_path, server):
    with pytest.raises(ModelError, match=r"github/300_model.pth: HTTP 404"):
        fetch_models(_catalog("classifier-300"), _locations(tmp_path, server), retry_delay=0)
    assert not (tmp_path / "classifier" / "300_model.pth").exists()


_DISK_FULL_CHILD = """
import resource, sys
resource.setrlimit(resource.RLIMIT_FSIZE, (3000, 3000))
from virnucpro.errors import ModelError
from virnucpro.store.fetch import download
try:
    download(sys.argv[1], sys.argv[2], attempts=1, retry_delay=0, timeout=5)
except ModelError as error:
    print(error)
    sys.exit(3)
"""


def test_disk_full_is_clear_and_resumable(tmp_path, server):
    body = _serve_classifiers(server)["500_model.pth"]
    dest = tmp_path / "classifier" / "500_model.pth"
    url = f"{server.url}/github/500_model.pth"
    child = subprocess.run([sys.executable, "-c", _DISK_FULL_CHILD, url, str(dest)], capture_output=True, text=True,
                           timeout=60, cwd=REPO, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert child.returncode == 3, child.stderr
    assert "500_model.pth.part" in child.stdout and "disk full or file too large" in child.stdout
    part = dest.with_name("500_model.pth.part")
    assert part.stat().st_size == 3000 and not dest.exists()

    fetch_models(_catalog("classifier-500"), _locations(tmp_path, server), retry_delay=0)
    assert server.requests[-1] == ("github/500_model.pth", "bytes=3000-")
    assert dest.read_bytes() == body


# ------------------------------------------------------------------------------------------ verify / tamper


def test_tampering_is_detected_by_verify_and_resolve(tmp_path, server, monkeypatch, capsys):
    _serve_classifiers(server)
    fetch_models(_catalog("classifier-300", "classifier-500"), _locations(tmp_path, server), retry_delay=0)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "no-cache"))
    assert cli_main(["models", "verify", "--dir", str(tmp_path)]) == 0

    target = tmp_path / "classifier" / "300_model.pth"
    data = bytearray(target.read_bytes())
    data[10] ^= 0xFF
    stat = target.stat()
    target.write_bytes(bytes(data))
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size and mtime: only a full hash sees it
    capsys.readouterr()
    assert cli_main(["models", "verify", "--dir", str(tmp_path)]) == ModelError.exit_code
    err = capsys.readouterr().err
    assert "300_model.pth" in err and "does not match" in err and "500_model.pth" not in err

    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched: the quick check rehashes
    with pytest.raises(ModelError, match="300_model.pth: sha256"):
        _resolve_classifier(300, tmp_path)
    with pytest.raises(ModelError, match="300_model.pth: size"):
        target.write_bytes(bytes(data[:-1]))
        verify_file(target, Lock.load(tmp_path))


# ------------------------------------------------------------------------------------------ resolve, in place


def test_resolve_names_the_fetch_command_when_missing(tmp_path):
    with pytest.raises(ModelError, match=r"run `virnucpro models fetch esm2-3B`"):
        resolve_model_paths(ModelPaths(), _locations(tmp_path))
    explicit = tmp_path / "mine.pt"
    explicit.write_bytes(b"x")
    with pytest.raises(ModelError, match="models fetch dnabert-s"):
        resolve_model_paths(ModelPaths(esm=str(explicit)), _locations(tmp_path))
    with pytest.raises(ModelError, match="no published classifier for chunk length 400"):
        _resolve_classifier(400, tmp_path)


def _torch_hub_and_hf_cache(root: Path) -> tuple[Path, Path]:
    checkpoints = root / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "esm2_t36_3B_UR50D.pt").write_bytes(_blob(900, 5))
    repo = root / "hf" / "hub" / "models--zhihan1996--DNABERT-S"
    for revision in ("0ld", "c0ffee"):
        snapshot = repo / "snapshots" / revision
        snapshot.mkdir(parents=True)
        for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
            (snapshot / name).write_bytes(name.encode() + revision.encode())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("c0ffee")
    return checkpoints, repo / "snapshots" / "c0ffee"


def test_torch_home_and_hf_home_are_used_in_place(tmp_path, server, monkeypatch, capsys):
    checkpoints, snapshot = _torch_hub_and_hf_cache(tmp_path)
    env = {"TORCH_HOME": str(tmp_path / "torch"), "HF_HOME": str(tmp_path / "hf")}
    models_dir = tmp_path / "models"
    bodies = _serve_classifiers(server)
    server.files["fair-esm/regression/esm2_t36_3B_UR50D-contact-regression.pt"] = b"regression"
    locations = _locations(models_dir, server, **env)
    outcomes = {o.key: o for o in fetch_models(_catalog("default"), locations, retry_delay=0)}
    assert outcomes["esm2/esm2_t36_3B_UR50D.pt"].status == "in place, recorded"
    assert outcomes["esm2/esm2_t36_3B_UR50D.pt"].path == checkpoints / "esm2_t36_3B_UR50D.pt"
    assert outcomes["dnabert-s/model.safetensors"].path == snapshot / "model.safetensors"
    assert outcomes["esm2/esm2_t36_3B_UR50D-contact-regression.pt"].status == "downloaded"
    fetched = {path for path, _ in server.requests}
    assert fetched == {"github/300_model.pth", "github/500_model.pth",
                       "fair-esm/regression/esm2_t36_3B_UR50D-contact-regression.pt"}

    paths = resolve_model_paths(ModelPaths(esm="3B"), locations, chunk_length=300)
    assert paths == ModelPaths(esm=str(checkpoints / "esm2_t36_3B_UR50D.pt"), dnabert=str(snapshot),
                               classifier=str(models_dir / "classifier" / "300_model.pth"))
    assert Path(paths.classifier).read_bytes() == bodies["300_model.pth"]
    lock = Lock.load(models_dir)
    assert lock.entries["esm2/esm2_t36_3B_UR50D.pt"].sha256 == _sha(_blob(900, 5))

    for name, value in {**env, "XDG_CACHE_HOME": str(tmp_path / "no-cache")}.items():
        monkeypatch.setenv(name, value)
    capsys.readouterr()
    assert cli_main(["models", "list", "--dir", str(models_dir)]) == 0
    listing = capsys.readouterr().out.replace("\n", "").replace("│", "").replace(" ", "")
    assert "inplace" in listing and "c0ffee" in listing and "checkpoints" in listing


def test_explicit_paths_pass_through(tmp_path):
    esm, dnabert, classifier = tmp_path / "e.pt", tmp_path / "dna", tmp_path / "c.pth"
    esm.write_bytes(b"e")
    dnabert.mkdir()
    classifier.write_bytes(b"c")
    chosen = ModelPaths(esm=str(esm), dnabert=str(dnabert), classifier=str(classifier))
    assert resolve_model_paths(chosen, _locations(tmp_path)) == chosen
    with pytest.raises(ModelError, match="nope.pth: classifier not found"):
        resolve_model_paths(ModelPaths(esm=str(esm), dnabert=str(dnabert), classifier=str(tmp_path / "nope.pth")),
                            _locations(tmp_path))


def test_mirror_forms():
    locations = StoreLocations.from_environ("/m", env={"VIRNUCPRO_MODELS_MIRROR": "http://a/x"},
                                            mirrors=["github=http://b/gh/"])
    assert locations.bases == {"fair-esm": "http://a/x/fair-esm", "huggingface": "http://a/x/huggingface",
                               "github": "http://b/gh"}
    with pytest.raises(ModelError, match="unknown mirror source 'gitlab'"):
        StoreLocations.from_environ("/m", env={}, mirrors=["gitlab=http://c"])


# ------------------------------------------------------------------------------------------ conversion


def _tiny_fair_esm_checkpoint(folder: Path, name: str = "esm2_t36_3B_UR50D") -> Path:
    """A 2-layer ESM-2 in fair-esm's file format: prefixed keys, argparse cfg, regression file beside it."""
    import esm

    torch.manual_seed(0)
    model = esm.model.esm2.ESM2(num_layers=2, embed_dim=32, attention_heads=4,
                                alphabet=esm.data.Alphabet.from_architecture("ESM-1b"), token_dropout=True)
    state = {}
    for key, tensor in model.state_dict().items():
        if key.startswith("contact_head."):
            continue
        prefix = "encoder." if key.startswith("lm_head.") else "encoder.sentence_encoder."
        state[prefix + key] = tensor.to(torch.float16)
    cfg = argparse.Namespace(encoder_layers=2, encoder_embed_dim=32, encoder_attention_heads=4, token_dropout=True)
    folder.mkdir(parents=True, exist_ok=True)
    pt = folder / f"{name}.pt"
    torch.save({"model": state, "cfg": {"model": cfg}}, pt)
    regression = {k: v for k, v in model.state_dict().items() if k.startswith("contact_head.")}
    torch.save({"model": regression}, folder / f"{name}-contact-regression.pt")
    return pt


def _fair_esm_state_dict(pt: Path) -> dict:
    import esm

    with torch.serialization.safe_globals([argparse.Namespace]):
        model, _ = esm.pretrained.load_model_and_alphabet_local(pt)
    return model.state_dict()


def test_convert_matches_fair_esm_loader(tmp_path, monkeypatch):
    from safetensors import safe_open
    from safetensors.torch import load_file

    models_dir = tmp_path / "models"
    pt = _tiny_fair_esm_checkpoint(models_dir / "esm2")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "no-cache"))
    assert cli_main(["models", "convert", "--dir", str(models_dir)]) == 0
    out = models_dir / "esm2" / "esm2_t36_3B_UR50D.safetensors"
    converted = load_file(out)
    reference = _fair_esm_state_dict(pt)
    assert set(converted) == set(reference)
    for key, tensor in reference.items():  # fair-esm upcasts on load; the file keeps the stored fp16
        stored = torch.float32 if key.startswith("contact_head.") else torch.float16
        assert converted[key].dtype == stored and torch.equal(converted[key].float(), tensor), key
    with safe_open(out, "pt") as handle:
        metadata = handle.metadata()
    assert {k: metadata[k] for k in ("format", "num_layers", "embed_dim", "attention_heads", "token_dropout")} == {
        "format": "virnucpro-esm2", "num_layers": "2", "embed_dim": "32", "attention_heads": "4",
        "token_dropout": "true"}
    assert metadata["source_sha256"] == _sha(pt.read_bytes())
    assert json.loads(metadata["virnucpro"]) == {"model": "esm2", "num_layers": 2, "embed_dim": 32,
                                                 "attention_heads": 4, "token_dropout": True}
    assert Lock.load(models_dir).entries["esm2/esm2_t36_3B_UR50D.safetensors"].sha256 == _sha(out.read_bytes())

    # the engine now gets the converted file
    (models_dir / "classifier").mkdir()
    (models_dir / "classifier" / "500_model.pth").write_bytes(b"c")
    dna = tmp_path / "dna"
    dna.mkdir()
    paths = resolve_model_paths(ModelPaths(esm="esm2-3B", dnabert=str(dna)), _locations(models_dir))
    assert paths.esm == str(out)


def test_converted_file_loads_in_the_packed_esm2(tmp_path):
    from virnucpro.models.esm2 import load_esm2
    from virnucpro.store.convert import convert_esm2

    pt = _tiny_fair_esm_checkpoint(tmp_path)
    from_pt = load_esm2(pt, "cpu", torch.float32)
    from_safetensors = load_esm2(convert_esm2(pt), "cpu", torch.float32)
    assert (from_safetensors.num_layers, from_safetensors.embed_dim) == (2, 32)
    reference = from_pt.state_dict()
    for key, tensor in from_safetensors.state_dict().items():
        assert torch.equal(tensor, reference[key]), key


def test_safetensors_writer_round_trips_every_dtype(tmp_path):
    from safetensors.torch import load_file

    from virnucpro.store.convert import write_safetensors

    shared = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    tensors = {"bf16": torch.randn(5, 3).to(torch.bfloat16), "i64": torch.arange(7), "bool": torch.rand(4) > 0.5,
               "empty": torch.zeros(0, 3), "view": shared.t(), "base": shared, "half": torch.randn(2, 2).half()}
    write_safetensors(tmp_path / "t.safetensors", tensors, {"format": "test"})
    loaded = load_file(tmp_path / "t.safetensors")
    assert set(loaded) == set(tensors)
    for key, tensor in tensors.items():
        assert loaded[key].dtype == tensor.dtype and torch.equal(loaded[key], tensor), key


def test_convert_rejects_a_non_checkpoint(tmp_path):
    from virnucpro.store.convert import convert_esm2

    bad = tmp_path / "esm2_bad.pt"
    torch.save({"model": {}, "cfg": {}}, bad)
    with pytest.raises(ModelError, match="esm2_bad.pt: key 'model'"):
        convert_esm2(bad)
    evil = tmp_path / "evil.pt"
    torch.save({"cfg": {"model": _RunsCommand(f"touch {tmp_path / 'pwned'}")}}, evil)
    with pytest.raises(ModelError, match=r"evil.pt: refused to unpickle: references global '\w+\.system'"):
        convert_esm2(evil)
    assert not (tmp_path / "pwned").exists()


class _RunsCommand:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)
