"""Registries: a neuron model, an input coding, a hardware target, a simulator backend, a network definition is
one entry registered by name. CLI choices and help come from the registries, and an unknown name is an error
listing the known ones, never a fall-through.

    NEURONS.register(entry)      # entry.name, entry.summary (one line)
    NEURONS.get("lif")           # the entry, or ConfigError naming the known names
    NEURONS.names()              # in registration order

Entries that live outside the toolchain (hardware targets and simulators in hw_targets/, networks in models/) are
registered by plugins: functions named in the `snntc.plugins` entry-point group (pyproject.toml), each called
once, on the first lookup in any registry. The toolchain itself never imports them.
"""
from __future__ import annotations

import threading
from importlib.metadata import entry_points
from typing import Callable, Dict, Generic, List, Optional, Type, TypeVar

from .errors import ConfigError, ToolchainError

PLUGIN_GROUP = "snntc.plugins"

E = TypeVar("E")

_plugins_lock = threading.RLock()
_plugins_state = {"loaded": False, "names": []}


def load_plugins() -> List[str]:
    """Call every `snntc.plugins` entry point's function once per process; returns the plugin names."""
    with _plugins_lock:
        if not _plugins_state["loaded"]:
            _plugins_state["loaded"] = True          # before the calls: a plugin may look entries up
            for ep in sorted(entry_points(group=PLUGIN_GROUP), key=lambda e: e.name):
                ep.load()()
                _plugins_state["names"].append(ep.name)
    return list(_plugins_state["names"])


class Registry(Generic[E]):
    """Named entries of one kind (`kind` names it in errors: "neuron model", "input coding", ...)."""

    def __init__(self, kind: str, error: Type[ToolchainError] = ConfigError):
        self.kind, self.error = kind, error
        self._entries: Dict[str, E] = {}

    def register(self, entry: E, replace: bool = False) -> E:
        name = getattr(entry, "name", None)
        if not isinstance(name, str) or not name:
            raise ConfigError(f"a {self.kind} entry needs a name, got {entry!r}")
        if not isinstance(getattr(entry, "summary", None), str):
            raise ConfigError(f"{self.kind} {name!r}: the entry needs a one-line `summary`")
        if name in self._entries and not replace and self._entries[name] is not entry:
            raise ConfigError(f"{self.kind} {name!r} is registered already")
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    def get(self, name: str) -> E:
        load_plugins()
        key = str(name).strip().lower() if name is not None else ""
        if key not in self._entries:
            known = ", ".join(self._entries) or "none (no snntc plugins found: is snntc installed? make setup)"
            raise self.error(f"unknown {self.kind} {name!r}; known {self.kind}s: {known}")
        return self._entries[key]

    def __contains__(self, name: str) -> bool:
        load_plugins()
        return name in self._entries

    def names(self, where: Optional[Callable[[E], bool]] = None) -> List[str]:
        return [e.name for e in self.entries() if where is None or where(e)]

    def entries(self) -> List[E]:
        load_plugins()
        return list(self._entries.values())

    def help(self, where: Optional[Callable[[E], bool]] = None, default: Optional[str] = None) -> str:
        """CLI help: every name with its one-line summary (and the default)."""
        text = "; ".join(f"{e.name}: {e.summary}" for e in self.entries() if where is None or where(e))
        return text + (f" (default {default})" if default else "")

    def snapshot(self) -> Dict[str, E]:
        """The entries as they are, for `restore` (tests that register entries at run time)."""
        load_plugins()
        return dict(self._entries)

    def restore(self, snapshot: Dict[str, E]) -> None:
        self._entries = dict(snapshot)
