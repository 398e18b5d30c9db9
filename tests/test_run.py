"""Run directory machinery with a deterministic hash scorer: plan, checkpoints, verification, aggregation."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from doubles import HashScorer, HashScorerFactory, fake_model_files, hash_vector
from virnucpro.config import EngineConfig, EnvConfig, PredictConfig
from virnucpro.errors import RunStateError
from virnucpro.io.prep_files import FrameSource
from virnucpro.outputs.results import read_prediction_results
from virnucpro.run import aggregate, pending_shards, plan_run, plan_shards, run_shard, shard_status
from virnucpro.run.multigpu import run_shards
from virnucpro.run.options import RunOptions
from virnucpro.run.parts import list_parts
from virnucpro.run.rundir import PREDICTIONS, RunDir

OPTIONS = RunOptions(part_frames=8, block_frames=4, shard_tokens=3000)


@pytest.fixture
def env(tmp_path) -> EnvConfig:
    return EnvConfig(models_dir=tmp_path / "store", cpus=1, no_progress=True)


def config(tmp_path: Path, input_path: Path, models_tag: str = "a", **changes) -> PredictConfig:
    models = fake_model_files(tmp_path / f"models-{models_tag}", models_tag)
    base = dict(input=input_path, outdir=tmp_path / "run", models=models, engine=EngineConfig(device="cpu"))
    return PredictConfig(**{**base, **changes})


@pytest.fixture
def planned(tmp_path, env, golden_prep):
    cfg = config(tmp_path, golden_prep / "input.fasta")
    return cfg, plan_run(cfg, env, gpus=1, options=OPTIONS)


def run_all(cfg: PredictConfig) -> None:
    scorer = HashScorer()
    for index in pending_shards(cfg.outdir):
        run_shard(cfg.outdir, index, scorer, options=OPTIONS)


def prepared_ids(rundir: Path) -> list[str]:
    return [line[1:].strip() for line in open(rundir / "prep" / "identified_protein.faa") if line.startswith(">")]


def check_predictions(rundir: Path) -> None:
    """Every prepared frame exactly once, in prep order, with its own (hash) score: an independent oracle."""
    ids, scores, _labels = read_prediction_results(rundir / PREDICTIONS)
    assert ids == prepared_ids(rundir)
    assert len(set(ids)) == len(ids)
    expected = np.array([hash_vector(i, "score", 1)[0] for i in ids], dtype=np.float32)
    np.testing.assert_allclose(scores[:, 1], expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("seed", range(5))
def test_plan_shards_cover_frames_once_and_balance_tokens(seed):
    costs = np.random.default_rng(seed).integers(20, 400, size=500)
    for min_shards, target in ((4, 10**9), (3, 5000), (600, 10**9)):
        shards = plan_shards(costs, min_shards, target)
        bounds = [(a, b) for a, b, _ in shards]
        assert bounds[0][0] == 0 and bounds[-1][1] == len(costs)
        assert all(a < b for a, b in bounds) and all(x[1] == y[0] for x, y in zip(bounds, bounds[1:]))
        assert [t for _, _, t in shards] == [int(costs[a:b].sum()) for a, b in bounds]
        expected = min(len(costs), max(min_shards, -(-int(costs.sum()) // target)))
        assert len(shards) == expected
        ideal = costs.sum() / len(shards)
        assert max(t for _, _, t in shards) <= ideal + costs.max()


def test_run_scores_every_frame_once_and_resumes_with_other_gpu_count(planned, env):
    cfg, manifest = planned
    assert len(manifest.shards) >= 4 and manifest.frames == len(FrameSource(cfg.outdir / "prep"))
    assert plan_run(cfg, env, gpus=8, options=OPTIONS) == manifest  # idempotent, plan fixed at creation
    run_all(cfg)
    report = aggregate(cfg.outdir, OPTIONS)
    assert report.frames == manifest.frames
    check_predictions(cfg.outdir)
    assert all(s.done and s.frames_done == s.frames for s in shard_status(cfg.outdir))
    assert (cfg.outdir / "complete.json").exists()


def test_torn_part_wrong_part_and_stale_temp_are_redone(planned):
    cfg, manifest = planned
    run_all(cfg)
    shard_dir = RunDir(cfg.outdir).shard_dir(1)
    parts = list_parts(shard_dir)
    assert len(parts) >= 2
    torn, renamed = parts[0], parts[1]
    torn.path.write_bytes(torn.path.read_bytes()[: torn.path.stat().st_size // 2])
    # a complete, readable part under another range's name: ids do not match the prepared frames
    renamed.path.rename(shard_dir / "part-{:012d}-{:012d}.h5".format(torn.start + 1, torn.start + 1 + renamed.stop - renamed.start))
    (shard_dir / ".part-000000000000-000000000008.h5.abc.tmp").write_bytes(b"half")
    (shard_dir / ".done").unlink()
    result = run_shard(cfg.outdir, 1, HashScorer(), options=OPTIONS)
    assert result.frames_scored == renamed.stop - torn.start
    assert not list(shard_dir.glob("*.tmp"))
    aggregate(cfg.outdir, OPTIONS)
    check_predictions(cfg.outdir)


def test_aggregate_refuses_incomplete_run_and_writes_nothing(planned):
    cfg, manifest = planned
    run_shard(cfg.outdir, 0, HashScorer(), options=OPTIONS)
    with pytest.raises(RunStateError, match=r"shards are not done \(1, 2"):
        aggregate(cfg.outdir, OPTIONS)
    assert not (cfg.outdir / PREDICTIONS).exists()
    assert pending_shards(cfg.outdir) == list(range(1, len(manifest.shards)))


def test_aggregate_finds_corrupt_part_in_done_shard_and_resume_fixes_it(planned):
    cfg, _ = planned
    run_all(cfg)
    victim = list_parts(RunDir(cfg.outdir).shard_dir(2))[0].path
    victim.write_bytes(b"\0" * 100)
    with pytest.raises(RunStateError, match="shard-0002"):
        aggregate(cfg.outdir, OPTIONS)
    assert not (cfg.outdir / PREDICTIONS).exists()
    assert pending_shards(cfg.outdir) == [2]
    run_all(cfg)
    aggregate(cfg.outdir, OPTIONS)
    check_predictions(cfg.outdir)


@pytest.mark.parametrize("change, message", [
    (dict(models_tag="b"), "esm model differs: manifest has .*models-a/a/esm2_t2_demo.pt.*now .*models-b/b/esm2_t2_demo.pt"),
    (dict(chunk_length=300), "chunk length differs: manifest has 500, now 300"),
    (dict(save_embeddings=True), "--save-embeddings differs"),
    (dict(input="other"), "input differs"),
])
def test_resume_with_other_settings_is_refused_unless_forced(planned, env, tmp_path, change, message):
    cfg, manifest = planned
    run_all(cfg)
    change = dict(change)
    tag = change.pop("models_tag", "a")
    if change.get("input") == "other":
        change["input"] = tmp_path / "other.fasta"
        change["input"].write_text(Path(cfg.input).read_text().replace("A", "C", 1))
    other = config(tmp_path, change.pop("input", cfg.input), tag, **change)
    with pytest.raises(RunStateError, match=message):
        plan_run(other, env, gpus=1, options=OPTIONS)
    assert pending_shards(cfg.outdir) == []  # nothing was touched
    forced = config(tmp_path, other.input, tag, **{**change, "force_restart": True})
    plan_run(forced, env, gpus=1, options=OPTIONS)
    assert pending_shards(cfg.outdir) == list(range(len(plan_run(other, env, options=OPTIONS).shards)))


def test_spawned_workers_share_the_shard_queue(planned, env):
    cfg, manifest = planned
    run_shard(cfg.outdir, 0, HashScorer(), options=OPTIONS)  # one shard already done before the launch
    scored = run_shards(cfg.outdir, cfg, env, devices=["cuda:0", "cuda:1"], scorer_factory=HashScorerFactory(),
                        options=OPTIONS)
    assert scored == list(range(1, len(manifest.shards)))
    aggregate(cfg.outdir, OPTIONS)
    check_predictions(cfg.outdir)
    events = [json.loads(line) for line in open(cfg.outdir / "telemetry.jsonl")]
    assert len({e["pid"] for e in events if e["event"] == "shard_done"}) >= 1
    assert all(e["frames_per_s"] > 0 for e in events if e["event"] == "part")


# ---------------------------------------------------------------- issue 15: never lose or silently corrupt data


def test_predict_refuses_a_folder_that_is_not_a_run_directory_and_touches_nothing(tmp_path, env, golden_prep):
    """Issue 15.1: `predict -o out` on a folder holding out/shards/keep/notes.txt deleted the file."""
    out = tmp_path / "run"
    (out / "shards" / "keep").mkdir(parents=True)
    (out / "shards" / "keep" / "notes.txt").write_text("data\n")
    cfg = config(tmp_path, golden_prep / "input.fasta")
    with pytest.raises(RunStateError, match=r"not a virnucpro run directory and not empty \(it holds shards\)"):
        plan_run(cfg, env, gpus=1, options=OPTIONS)
    assert (out / "shards" / "keep" / "notes.txt").read_text() == "data\n"
    assert sorted(p.name for p in out.rglob("*")) == ["keep", "notes.txt", "shards"]


def test_force_restart_removes_only_the_runs_own_files(planned, env, tmp_path):
    """Issue 15.1: --force-restart removed prep/ and shards/ wholesale."""
    cfg, _ = planned
    run_all(cfg)
    aggregate(cfg.outdir, OPTIONS)
    mine = {cfg.outdir / "notes.txt": "root", cfg.outdir / "prep" / "my.fasta": "prep",
            cfg.outdir / "shards" / "shard-0001" / "keep.txt": "shard", cfg.outdir / "shards" / "readme": "shards"}
    for path, text in mine.items():
        path.write_text(text)
    old_parts = {ref.path for index in range(4) for ref in list_parts(RunDir(cfg.outdir).shard_dir(index))}
    forced = config(tmp_path, cfg.input, chunk_length=300, force_restart=True)
    plan_run(forced, env, gpus=1, options=OPTIONS)
    assert {path: path.read_text() for path in mine} == mine
    assert not any(path.exists() for path in old_parts) and not (cfg.outdir / PREDICTIONS).exists()
    assert (cfg.outdir / "prep" / "chunked.fasta").exists()  # prepared again, for chunk length 300


def test_force_restart_clears_temporaries_of_a_killed_writer_files_and_folders(planned, env, tmp_path):
    """A kill while an index folder was being written left `.frames.index.<random>.tmp/`: clearing crashed on it."""
    cfg, _ = planned
    stale_folder = cfg.outdir / "prep" / ".frames.index.k1ll3d.tmp"
    stale_folder.mkdir(parents=True)
    (stale_folder / "ids.npy").write_bytes(b"half")
    stale_file = cfg.outdir / ".fanout.k1ll3d.tmp"  # an aggregation's scratch table
    stale_file.write_bytes(b"half")
    forced = config(tmp_path, cfg.input, chunk_length=300, force_restart=True)
    plan_run(forced, env, gpus=1, options=OPTIONS)
    assert not stale_folder.exists() and (cfg.outdir / "prep" / "chunked.fasta").exists()


def swap_scores(part: Path, rows: int = 10) -> None:
    """Swap score1/score2 in the first rows: the file stays valid HDF5 with the right ids."""
    import h5py

    with h5py.File(part, "r+") as handle:
        scores = handle["scores"][:]
        scores[:rows] = scores[:rows, ::-1]
        handle["scores"][...] = scores


def test_a_part_altered_on_disk_is_found_redone_and_reported(planned, env, caplog):
    """Issue 15.2: swapped scores in a valid part gave exit 0, no warning and changed calls."""
    from doubles import HashScorerFactory
    from virnucpro.run import predict_run

    cfg, _ = planned
    run_all(cfg)
    aggregate(cfg.outdir, OPTIONS)
    victim = list_parts(RunDir(cfg.outdir).shard_dir(1))[0].path
    swap_scores(victim)
    with caplog.at_level("WARNING"):
        predict_run(cfg, env, scorer_factory=HashScorerFactory(), options=OPTIONS)
    assert f"{victim}: content checksum mismatch" in caplog.text and "scored again" in caplog.text
    check_predictions(cfg.outdir)  # every score is the hash oracle's again


def test_random_bytes_inside_an_embedding_part_are_found(tmp_path, env, golden_prep):
    """Issue 15.2: bytes written into a part's data silently corrupted embeddings.h5."""
    import h5py

    from doubles import HashScorerFactory
    from virnucpro.outputs.embeddings import read_embeddings_h5
    from virnucpro.run import predict_run

    cfg = config(tmp_path, golden_prep / "input.fasta", save_embeddings=True)
    predict_run(cfg, env, scorer_factory=HashScorerFactory(), options=OPTIONS)
    victim = list_parts(RunDir(cfg.outdir).shard_dir(2))[0].path
    with h5py.File(victim, "r") as handle:
        offset = handle["protein"].id.get_offset()  # the raw float32 values, not HDF5 metadata
    with open(victim, "r+b") as raw:
        raw.seek(offset + 4)
        raw.write(b"\x7f" * 8)
    predict_run(cfg, env, scorer_factory=HashScorerFactory(), options=OPTIONS)
    embeddings = read_embeddings_h5(cfg.outdir / "embeddings.h5")
    expected = np.stack([hash_vector(i, "protein", 4) for i in embeddings.ids])
    np.testing.assert_array_equal(embeddings.protein, expected)


def test_an_input_edited_in_place_with_size_and_mtime_kept_is_not_resumed(planned, env):
    """Issue 15.3: the checksum cache trusted (path, size, mtime)."""
    cfg, _ = planned
    stat = Path(cfg.input).stat()
    copy = Path(cfg.outdir).parent / "input.fasta"
    copy.write_bytes(Path(cfg.input).read_bytes())
    cfg = config(Path(cfg.outdir).parent, copy)
    plan_run(cfg, env, gpus=1, options=OPTIONS)
    stat = copy.stat()
    text = copy.read_text()
    copy.write_text(text.replace("ACGT", "ACGA", 1))  # same size
    os.utime(copy, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert copy.stat().st_size == stat.st_size and copy.stat().st_mtime_ns == stat.st_mtime_ns
    with pytest.raises(RunStateError, match="input differs"):
        plan_run(cfg, env, gpus=1, options=OPTIONS)


def test_changed_prepared_files_are_not_trusted(planned, env):
    cfg, _ = planned
    chunked = cfg.outdir / "prep" / "chunked.fasta"
    chunked.write_text(chunked.read_text().replace("A", "C", 1))
    with pytest.raises(RunStateError, match="chunked.fasta changed since planning"):
        plan_run(cfg, env, gpus=1, options=OPTIONS)
    run_all(cfg)
    with pytest.raises(RunStateError, match="chunked.fasta changed since planning"):
        aggregate(cfg.outdir, OPTIONS)
    assert not (cfg.outdir / PREDICTIONS).exists()


def test_aggregation_never_reads_the_input_again(env, tmp_path, golden_prep):
    """Issue 15.3: after the input moved, the resume failed at the very end; another file with the same ids at the
    old path gave a wrong sequence_summary.tsv."""
    original = tmp_path / "input.fasta"
    original.write_bytes((golden_prep / "input.fasta").read_bytes())
    cfg = config(tmp_path, original)
    plan_run(cfg, env, gpus=1, options=OPTIONS)
    run_all(cfg)
    aggregate(cfg.outdir, OPTIONS)
    summary = (cfg.outdir / "sequence_summary.tsv").read_text()
    headers = [line for line in original.read_text().splitlines() if line.startswith(">")]
    original.write_text("".join(f"{header}\n{'ACGT' * 300}\n" for header in headers))  # same ids, other lengths
    aggregate(cfg.outdir, OPTIONS)
    assert (cfg.outdir / "sequence_summary.tsv").read_text() == summary
    original.unlink()  # moved away
    aggregate(cfg.outdir, OPTIONS)
    assert (cfg.outdir / "sequence_summary.tsv").read_text() == summary


def test_temporaries_of_earlier_attempts_are_removed_at_resume(planned, env):
    """Issue 15.7: prep/.*.tmp (3x the input) and .<output>.*.tmp of killed runs were never removed."""
    cfg, _ = planned
    run = RunDir(cfg.outdir)
    leftovers = [run.prep / ".chunked.fasta.k1l2m3n4.tmp", run.prep / ".identified_protein.faa.abcd_123.tmp",
                 run.root / ".prediction_results.txt.zz99yy88.tmp", run.root / ".manifest.json.q1w2e3r4.tmp"]
    users = [run.root / ".my-notes.k1l2m3n4.tmp", run.root / "draft.tmp"]
    for path in leftovers + users:
        path.write_text("x" * 100)
    plan_run(cfg, env, gpus=1, options=OPTIONS)
    assert not any(path.exists() for path in leftovers)
    assert all(path.exists() for path in users)  # not names this run writes


def test_cpu_runs_record_the_precision_that_ran(tmp_path, env, golden_prep):
    """Issue 15.10: CPU runs recorded bf16/fp16 (what was asked, not what ran) and `--precision fp32` on the CPU
    was then refused."""
    from virnucpro.run.manifest import Manifest

    cfg = config(tmp_path, golden_prep / "input.fasta", engine=EngineConfig(device="cpu", precision="bf16"))
    manifest = plan_run(cfg, env, options=OPTIONS)
    assert manifest.identity.precision == "fp32" == Manifest.load(cfg.outdir / "manifest.json").identity.precision
    for mode in ("fp32", "fp16", "bf16"):  # every mode computes fp32 on the CPU
        again = config(tmp_path, golden_prep / "input.fasta", engine=EngineConfig(device="cpu", precision=mode))
        assert plan_run(again, env, options=OPTIONS) == manifest
    with pytest.raises(RunStateError, match="precision differs: manifest has fp32, now bf16"):
        plan_run(config(tmp_path, golden_prep / "input.fasta", engine=EngineConfig(device="cuda", precision="bf16")),
                 env, gpus=1, options=OPTIONS)


def _hashed_files(monkeypatch) -> list[Path]:
    import virnucpro.run.checksums as checksums

    hashed, real = [], checksums.sha256_file
    monkeypatch.setattr(checksums, "sha256_file", lambda path: hashed.append(Path(path)) or real(path))
    return hashed


def test_a_new_run_directory_takes_model_checksums_from_the_shared_cache(planned, env, tmp_path, monkeypatch):
    """A new run with the same model files hashed them again (6 GB for the real models) although an earlier run had."""
    cfg, manifest = planned
    model_files = {Path(getattr(cfg.models, role)).resolve() for role in ("esm", "dnabert", "classifier")}
    hashed = _hashed_files(monkeypatch)
    second = plan_run(config(tmp_path, cfg.input, outdir=tmp_path / "second"), env, gpus=1, options=OPTIONS)
    assert second.identity.models == manifest.identity.models
    assert not [path for path in hashed if path in model_files or path.parent in model_files]
    assert hashed  # the input and the prepared files of the new run are still hashed


def test_a_model_file_changed_in_place_is_hashed_again_by_a_new_run(planned, env, tmp_path):
    cfg, manifest = planned
    esm = Path(cfg.models.esm)
    content = bytearray(esm.read_bytes())
    content[-1] ^= 0xFF  # same size, other content, new ctime
    esm.write_bytes(bytes(content))
    second = plan_run(config(tmp_path, cfg.input, outdir=tmp_path / "second"), env, gpus=1, options=OPTIONS)
    assert second.identity.models["esm"]["sha256"] != manifest.identity.models["esm"]["sha256"]
    assert second.identity.models["classifier"] == manifest.identity.models["classifier"]


def test_an_unwritable_shared_cache_costs_a_rehash_not_an_error(tmp_path, golden_prep):
    store = tmp_path / "store"
    store.write_text("a file where the model store folder would be")  # nothing can be written under it
    env = EnvConfig(models_dir=store, cpus=1, no_progress=True)
    manifest = plan_run(config(tmp_path, golden_prep / "input.fasta"), env, gpus=1, options=OPTIONS)
    assert manifest.identity.models["esm"]["sha256"]
