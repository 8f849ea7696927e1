"""The trajectory database: schema, single-use run names, wide sample rows, windows."""

from __future__ import annotations

import sqlite3

import pytest

from atomlab.core.errors import AtomlabError, InvalidInputError, NotFoundError
from atomlab.core.sqlite import connect, migrate
from atomlab.trajectory import ChannelInfo, MonitorConfig, Sample, open_store
from atomlab.trajectory.records import ActionEvent, MissedTicks
from atomlab.trajectory.schema import MIGRATIONS

TABLES = {
    "runs",
    "signal_catalog",
    "spec_catalog",
    "signal_samples",
    "spec_samples",
    "action_events",
    "monitor_errors",
    "missed_ticks",
}


def _channels(labels, unit="m"):
    return [
        ChannelInfo(label=x, unit=unit, source_command="Fake.Get", source_field=x) for x in labels
    ]


def _create(store, name="run-1", n_signals=2, n_specs=1, **config):
    cfg = MonitorConfig(
        run_name=name,
        signals=tuple(f"s{k}" for k in range(n_signals)),
        specs=tuple(f"p{k}" for k in range(n_specs)),
        **config,
    )
    return store.create_run(
        cfg,
        signals=_channels(cfg.signals),
        specs=_channels(cfg.specs, "V"),
        instrument={"kind": "fake"},
        started_at_utc="2026-01-01T00:00:00.000000Z",
    )


def _write(store, run, records, n_signals=2, n_specs=1):
    writer = store.record_writer(
        run, n_signals=n_signals, n_specs=n_specs, flush_interval_s=0.05, max_batch=100
    )
    for record in records:
        writer.put(record)
    writer.close()


def _sample(k, n_signals=2, interval=0.1):
    return Sample(k, k, k * interval, k * interval, 0.001, tuple([float(k)] * n_signals), (0.1,))


def test_initialize_schema_creates_required_tables_wal_and_version(db):
    with open_store(db, read_only=False) as store:
        names = {r[0] for r in store.connection.execute("SELECT name FROM sqlite_master")}
        assert names >= TABLES
        assert store.connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store.connection.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        indexes = {
            r[0]
            for r in store.connection.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
        }
        assert {
            "signal_samples_by_time",
            "action_events_by_time",
            "missed_ticks_by_time",
        } <= indexes


def test_a_duplicate_run_name_is_refused_and_nothing_is_written(db):
    with open_store(db, read_only=False) as store:
        run = _create(store)
        _write(store, run, [_sample(0)])
        with pytest.raises(InvalidInputError, match="already holds a run named 'run-1'"):
            _create(store, n_signals=3)
        counts = [
            store.connection.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # noqa: S608
            for t in ("runs", "signal_catalog", "spec_catalog", "signal_samples")
        ]
        assert counts == [1, 2, 1, 1]


def test_catalog_rows_hold_label_unit_source_and_limits(db):
    with open_store(db, read_only=False) as store:
        cfg = MonitorConfig(
            run_name="r", signals=("Z",), specs=("Bias",), tolerances={"Bias": 0.01}
        )
        spec = ChannelInfo(
            label="Bias",
            unit="V",
            source_command="Bias.Get",
            source_field="bias_v",
            min_value=-5.0,
            max_value=5.0,
            set_command="Bias.Set",
        )
        store.create_run(
            cfg,
            signals=_channels(["Z"]),
            specs=[spec],
            instrument={},
            started_at_utc="2026-01-01T00:00:00Z",
        )
        row = dict(store.connection.execute("SELECT * FROM spec_catalog").fetchone())
    assert row["label"] == "Bias" and row["unit"] == "V" and row["source_field"] == "bias_v"
    assert (row["min_value"], row["max_value"], row["tolerance"]) == (-5.0, 5.0, 0.01)
    assert row["set_command"] == "Bias.Set"


def test_more_signals_than_base_columns_get_their_own_columns(db):
    with open_store(db, read_only=False) as store:
        run = _create(store, n_signals=20)
        _write(store, run, [_sample(k, 20) for k in range(3)], n_signals=20)
    rows = list(open_store(db).samples("signals"))
    assert len(rows) == 3 and rows[2]["s19"] == 2.0 and rows[2]["s0"] == 2.0


def test_signal_window_is_marked_complete_or_partial(db):
    with open_store(db, read_only=False) as store:
        run = _create(store, action_window_s=0.3)
        records = [_sample(k) for k in range(10)]
        records.append(MissedTicks(10, 2, 1.0, 1.2, "late"))
        records.extend(_sample(k) for k in range(12, 20))  # sample_idx == tick here
        _write(store, run, records)
    reader = open_store(db)
    inside = reader.signal_window(0.2, 0.8)
    assert inside.complete and inside.partial_reason is None and inside.count == 7
    assert inside.values["s0"] == [2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    assert inside.units == {"s0": "m", "s1": "m"}
    early = reader.signal_window(-0.5, 0.3)
    assert not early.complete and "before the run" in early.partial_reason
    late = reader.signal_window(1.7, 2.5)
    assert not late.complete and "not reached the window end" in late.partial_reason
    gap = reader.signal_window(0.9, 1.3)
    assert gap.complete and gap.missed_ticks == 2
    with open_store(db, read_only=False) as store:
        store.finish_run(run.id, status="completed", ended_at_utc="x", reason="done")
    assert "run ended" in open_store(db).signal_window(1.7, 2.5).partial_reason


def test_actions_are_stored_with_their_index_and_read_back(db):
    event = ActionEvent(
        0, 3, 0.3, 0.3, "2026-01-01T00:00:00.3Z", "p0", 0.1, 0.2, 0.1, 1, "external", -2.2, 2.8
    )
    with open_store(db, read_only=False) as store:
        run = _create(store)
        _write(store, run, [_sample(0), event])
    reader = open_store(db)
    assert reader.action(0) == event
    with pytest.raises(NotFoundError, match="has no action 1"):
        reader.action(1)
    with pytest.raises(NotFoundError, match="no run named 'nope'"):
        reader.actions("nope")


def test_asking_for_an_action_of_a_run_without_any_says_so(db):
    with open_store(db, read_only=False) as store:
        run = _create(store)
        _write(store, run, [_sample(0)])
    with pytest.raises(NotFoundError, match=r"has no action 0; it has none so far") as caught:
        open_store(db).action(0)
    assert "0..0" not in str(caught.value)


@pytest.mark.parametrize("read_only", [True, False])
def test_a_file_that_is_no_database_or_a_folder_is_refused_with_the_fix(tmp_path, read_only):
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database at all, just some bytes " * 100)
    for path in (junk, tmp_path):
        with pytest.raises(InvalidInputError, match="--db-path") as caught:
            open_store(path, read_only=read_only)
        assert caught.value.details["field"] == "db_path"
    assert junk.read_bytes().startswith(b"not a database")  # left as it was


def test_a_read_only_store_never_creates_a_database(tmp_path):
    with pytest.raises(NotFoundError):
        open_store(tmp_path / "missing.sqlite")
    assert not (tmp_path / "missing.sqlite").exists()
    sqlite3.connect(tmp_path / "empty.sqlite").close()
    with pytest.raises(NotFoundError, match="no trajectory data"):
        open_store(tmp_path / "empty.sqlite")


def test_foreign_keys_reject_samples_of_an_unknown_run(db):
    with (
        open_store(db, read_only=False) as store,
        pytest.raises(sqlite3.IntegrityError),
        store.connection,
    ):
        store.connection.execute(
            "INSERT INTO signal_samples (run_id, sample_idx, segment_id, dt_s, scheduled_dt_s,"
            " latency_s) VALUES (99, 0, 0, 0.0, 0.0, 0.0)"
        )


def test_a_failed_batch_writes_none_of_its_records(db):
    with open_store(db, read_only=False) as store:
        run = _create(store)
        writer = store.record_writer(run, n_signals=2, n_specs=1, flush_interval_s=5, max_batch=3)
        writer.put(_sample(0))
        writer.put(_sample(0))  # the same sample_idx twice: the batch's transaction fails
        writer.put(_sample(1))
        with pytest.raises(AtomlabError):
            writer.close()
    assert list(open_store(db).samples("signals")) == []
    assert open_store(db).run().samples == 0


def test_a_version_1_database_is_read_and_migrated_without_losing_a_row(db):
    conn = connect(db)
    migrate(conn, MIGRATIONS[:1])
    with conn:
        conn.execute(
            "INSERT INTO runs (id, name, status, started_at_utc, interval_s, rotate_entries,"
            " action_window_s, config_json, atomlab_version, instrument_json, hostname, pid)"
            " VALUES (1, 'old', 'completed', '2026-01-01T00:00:00.000000Z', 0.1, 10, 2.5,"
            " '{}', '0.0', '{}', 'elsewhere', 1)"
        )
        conn.executemany(
            "INSERT INTO signal_samples (run_id, sample_idx, segment_id, dt_s, scheduled_dt_s,"
            " latency_s, v0) VALUES (1, ?, 0, ?, ?, 0.001, 1.0)",
            [(k, k * 0.1, k * 0.1) for k in range(50)],
        )
        conn.execute(
            "INSERT INTO action_events (run_id, action_idx, sample_idx, dt_s, end_dt_s,"
            " detected_at_utc, spec_label, old_value, new_value, delta, steps, source,"
            " window_start_dt_s, window_end_dt_s) VALUES (1, 0, 3, 0.3, 0.3, 'x', 'Bias', 0.1,"
            " 0.2, 0.1, 1, 'external', 0, 1)"
        )
    conn.close()
    with open_store(db) as old:  # a reader leaves an old database as it is
        assert old.version == 1
        (action,) = old.actions("old")
        assert action.kind == "spec-change" and action.command is None
    with open_store(db, read_only=False) as store:  # a writer migrates it
        assert store.version == len(MIGRATIONS)
        count = store.connection.execute("SELECT count(*) FROM signal_samples").fetchone()[0]
        assert count == 50  # the status CHECK was widened without a cascade through runs
        assert store.actions("old")[0].new_value == 0.2
        with store.connection:
            store.connection.execute("UPDATE runs SET status = 'crashed'")
        assert store.run("old").status == "crashed"
        with pytest.raises(sqlite3.IntegrityError), store.connection:
            store.connection.execute("UPDATE runs SET status = 'bogus'")
        assert store.connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_command_actions_keep_their_args_and_reply_payload(db):
    spectrum = {"channels": ["Current (A)"], "data": [[1e-10, 2e-10, 3e-10]], "bias_v": [0, 1, 2]}
    with open_store(db, read_only=False) as store:
        run = _create(store)
        command = ActionEvent(
            action_idx=0,
            sample_idx=2,
            dt_s=0.2,
            end_dt_s=1.2,
            detected_at_utc="2026-01-01T00:00:00.200000Z",
            spec_label="BiasSpectr.Start",
            old_value=None,
            new_value=None,
            delta=None,
            steps=1,
            source="self",
            window_start_dt_s=-2.3,
            window_end_dt_s=3.7,
            kind="command",
            command="BiasSpectr.Start",
            args={"get_data": 1},
            payload=spectrum,
        )
        _write(store, run, [_sample(0), command])
    with open_store(db) as reader:
        (stored,) = reader.actions(kind="command")
        assert stored == command
        assert reader.actions(kind="spec-change") == []
