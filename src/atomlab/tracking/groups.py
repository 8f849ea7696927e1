"""Stopping the process group of a crashed run's step, and only that group.

A step runs in its own process group (``start_new_session``), whose id is the step's pid. When
the tracking process dies (``kill -9``) the group lives on; whoever reaps the run stops it. A
group is taken to be the step's when its leader is alive and started when the step's process did
(``pid_started``), or — the leader gone — for the members of the group created no earlier than
that: Linux does not hand out a pid while it still names a live process group, so members of
that group belong to it.
"""

from __future__ import annotations

import contextlib
import os
import signal

import psutil

GRACE_S = 5.0
START_SLACK_S = 1.0


def process_started(pid: int) -> float | None:
    """The start time (epoch s) of process ``pid``, or None when it cannot be read."""
    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return None


def group_members(pgid: int, pid_started: float | None) -> list[psutil.Process]:
    """Live processes of group ``pgid`` that belong to the step started at ``pid_started``."""
    members: list[psutil.Process] = []
    for proc in psutil.process_iter(["pid", "create_time"]):
        try:
            if os.getpgid(proc.pid) != pgid or proc.status() == psutil.STATUS_ZOMBIE:
                continue
        except (ProcessLookupError, psutil.Error):
            continue
        created = proc.info.get("create_time")
        if proc.pid == pgid and pid_started is not None and created is not None:
            if abs(created - pid_started) > START_SLACK_S:
                return []  # the leader's pid now names another process: not our group
        elif pid_started is not None and created is not None and created < pid_started - 1:
            continue  # older than the step: joined by nobody we know
        members.append(proc)
    return members


def stop_group(pgid: int, pid_started: float | None, *, grace_s: float = GRACE_S) -> list[int]:
    """SIGTERM the step's group, SIGKILL what is left after ``grace_s``; the pids signalled."""
    members = group_members(pgid, pid_started)
    if not members:
        return []
    for proc in members:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(members, timeout=grace_s)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signal.SIGKILL)
    psutil.wait_procs(alive, timeout=grace_s)
    return sorted(p.pid for p in members)


__all__ = ["group_members", "process_started", "stop_group"]
