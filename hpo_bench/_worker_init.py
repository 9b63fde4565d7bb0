"""Imported once by the fork server of :mod:`hpo_bench.executors`, so that every cell
process starts with torch, the harness and the registries already loaded (a fork, not an
interpreter start and seconds of imports per cell)."""

from __future__ import annotations

from . import harness, registry

harness.warm_up()

try:
    registry.discover()
except Exception:  # noqa: BLE001 - a broken plug-in must not kill the fork server:
    registry._DISCOVERED = False  # each cell retries and records the real error as `error`
