"""The agent's state directory: identity, progress and round checkpoints, crash-safe."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from slm_agent.checkpoint import CheckpointStore, Identity, Progress
from slm_agent.rounds import PathStat, RoundOutcome, SampleStat
from slm_agent.trainer import TrainReport


def outcome(round_number: int) -> RoundOutcome:
    return RoundOutcome(
        round=round_number,
        stats=[SampleStat("syn-1", [PathStat(-0.5, True, -2.0, -1.5)], False, True)],
        contributions={"syn-1": " 2+2=4\n#### 4"},
        accuracy_before=0.0,
        accuracy_after=1.0,
        correct_path_nlp_before=-2.0,
        correct_path_nlp_after=-1.5,
        train=TrainReport(steps=3, seconds=1.5, mean_parts={"total": 2.0}),
    )


def write_weights(directory: Path) -> None:
    (directory / "model").mkdir()
    (directory / "model" / "weights.bin").write_bytes(b"w" * 64)


def test_a_saved_round_reads_back_equal(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    path = store.save_round(outcome(1), write_weights)
    assert path == tmp_path / "checkpoints" / "round-1"
    assert (path / "model" / "weights.bin").read_bytes() == b"w" * 64
    assert store.load_outcome(1) == outcome(1)
    assert store.latest_round() == 1


def test_a_checkpoint_cut_short_by_a_crash_is_never_the_latest(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    store.save_round(outcome(1), write_weights)

    def crash_midway(directory: Path) -> None:
        write_weights(directory)
        raise KeyboardInterrupt  # the process dies while writing round 2

    with pytest.raises(KeyboardInterrupt):
        store.save_round(outcome(2), crash_midway)
    assert store.latest_round() == 1
    assert not store.round_dir(2).exists()
    leftovers = list((tmp_path / "checkpoints").glob(".round-2.tmp*"))
    assert len(leftovers) == 1
    store.clean_temporaries()
    assert not any((tmp_path / "checkpoints").glob(".round-*"))


def test_only_the_two_newest_checkpoints_are_kept(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    for r in (1, 2, 3):
        store.save_round(outcome(r), write_weights)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["round-2", "round-3"]


def test_saving_a_round_again_replaces_it_whole(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    store.save_round(outcome(1), write_weights)
    again = outcome(1)
    again.accuracy_after = 0.5
    store.save_round(again, write_weights)
    assert store.load_outcome(1).accuracy_after == 0.5


def test_identity_round_trips_and_only_its_owner_can_read_the_token(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    identity = Identity("agent-1", "tok", "clinic-a", 2, "127.0.0.1:50051", "f" * 64)
    assert store.load_identity() is None
    store.save_identity(identity)
    assert store.load_identity() == identity
    mode = stat.S_IMODE((tmp_path / "identity.json").stat().st_mode)
    assert mode == 0o600


def test_progress_starts_at_zero_and_round_trips(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    assert store.load_progress() == Progress()
    progress = Progress(last_trained_round=3, last_reported_round=2, skipped_rounds=[1])
    store.save_progress(progress)
    assert store.load_progress() == progress
    assert not list(tmp_path.glob(".progress.json.tmp*"))
