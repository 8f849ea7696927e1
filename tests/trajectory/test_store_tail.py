"""Cursor tails of the trajectory store: samples and actions after an index, while a run records."""

from __future__ import annotations

from atomlab.trajectory import ActionEvent, ChannelInfo, MonitorConfig, Sample, open_store


def _create(store, name="run-1"):
    cfg = MonitorConfig(run_name=name, signals=("s0", "s1"), specs=("p0",))
    return store.create_run(
        cfg,
        signals=[ChannelInfo(label=s, unit="m") for s in cfg.signals],
        specs=[ChannelInfo(label="p0", unit="V")],
        instrument={"kind": "fake"},
        started_at_utc="2026-01-01T00:00:00.000000Z",
    )


def _write(store, run, records):
    writer = store.record_writer(run, n_signals=2, n_specs=1, flush_interval_s=0.05, max_batch=100)
    for record in records:
        writer.put(record)
    writer.close()


def _sample(k):
    return Sample(k, k, k * 0.1, k * 0.1, 0.001, (float(k), -float(k)), (0.1,))


def _action(k):
    return ActionEvent(
        action_idx=k,
        sample_idx=k,
        dt_s=k * 0.1,
        end_dt_s=k * 0.1,
        detected_at_utc="2026-01-01T00:00:00Z",
        spec_label="p0",
        old_value=0.1,
        new_value=0.2,
        delta=0.1,
        steps=1,
        source="external",
        window_start_dt_s=0.0,
        window_end_dt_s=1.0,
    )


def test_samples_after_a_cursor_come_in_order_columnar_and_bounded(db):
    with open_store(db, read_only=False) as store:
        run = _create(store)
        _write(store, run, [_sample(k) for k in range(10)])
    reader = open_store(db)  # read-only, as a dashboard opens it
    first = reader.samples_after(-1, limit=4)
    assert first["sample_idx"] == [0, 1, 2, 3]
    assert first["values"] == {"s0": [0.0, 1.0, 2.0, 3.0], "s1": [-0.0, -1.0, -2.0, -3.0]}
    rest = reader.samples_after(first["last_sample_idx"])
    assert rest["sample_idx"] == list(range(4, 10))
    assert rest["dt_s"][0] == 0.4
    nothing = reader.samples_after(rest["last_sample_idx"])
    assert nothing["sample_idx"] == [] and nothing["last_sample_idx"] == 9
    specs = reader.samples_after(7, kind="specs")
    assert specs["values"] == {"p0": [0.1, 0.1]}


def test_a_reader_sees_samples_and_actions_written_after_it_opened(db):
    with open_store(db, read_only=False) as store:
        run = _create(store)
        _write(store, run, [_sample(0), _action(0)])
        reader = open_store(db)
        cursor = reader.samples_after(-1)["last_sample_idx"]
        assert [a.action_idx for a in reader.actions_after(-1)] == [0]
        _write(store, run, [_sample(1), _sample(2), _action(1), _action(2)])
        assert reader.samples_after(cursor)["sample_idx"] == [1, 2]
        assert [a.action_idx for a in reader.actions_after(0)] == [1, 2]
        assert reader.actions_after(2) == []
