"""Safe YAML loading: no Python tags, no aliases (a billion-laughs file is under 1 KB), and caps on
size, node count and nesting so that a hostile file fails fast with a line and column."""

from __future__ import annotations

from typing import Any

import yaml

MAX_BYTES = 2**20
"""Largest scenario text accepted (1 MiB); a real scenario is a few KB."""
MAX_NODES = 10_000
"""Most YAML nodes (scalars, sequences, mappings) in one document."""
MAX_DEPTH = 50
"""Deepest nesting of sequences/mappings; the composer recurses once per level."""


class YAMLError(ValueError):
    """A YAML file that cannot be parsed; the message has the file, line and column."""


def where(text: str, index: int) -> tuple[int, int]:
    """1-based (line, column) of character `index` in `text`."""
    index = max(0, min(index, len(text)))
    return text.count("\n", 0, index) + 1, index - text.rfind("\n", 0, index)


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader that refuses anchors/aliases outright instead of expanding them, and stops
    at the first node past the node-count or depth cap (before any recursion can overflow)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._nodes = 0
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise yaml.composer.ComposerError(
                None,
                None,
                "YAML aliases (*name) are not allowed in scenario files",
                event.start_mark,
            )
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise yaml.composer.ComposerError(
                None,
                None,
                f"more than {MAX_NODES} YAML nodes; scenario files are small",
                event.start_mark,
            )
        nested = isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent)
        if nested and self._depth >= MAX_DEPTH:
            raise yaml.composer.ComposerError(
                None, None, f"nesting deeper than {MAX_DEPTH} levels", event.start_mark
            )
        self._depth += nested
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= nested

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        # A scalar that matches a tag's pattern but not its range (`2001-13-45` as a timestamp)
        # raises a bare ValueError; give it the node's line and column like any parse error.
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as exc:
            raise yaml.constructor.ConstructorError(
                None, None, f"bad {node.tag.rsplit(':', 1)[-1]} value: {exc}", node.start_mark
            ) from None


def load_yaml(text: str, source: str = "<string>") -> Any:
    """Parse YAML text safely; errors name `source` with line and column."""
    if len(text) > MAX_BYTES:  # characters ≥ bytes/4: a cheap first cut before encoding
        raise YAMLError(f"{source}:1:1: larger than the {MAX_BYTES // 2**20} MiB limit")
    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else f"{source}:1:1"
        raise YAMLError(f"{at}: {exc.problem or exc.context}") from None
    except yaml.reader.ReaderError as exc:  # a control character: it carries only an offset
        line, col = where(text, exc.position)
        raise YAMLError(
            f"{source}:{line}:{col}: character {exc.character!r} is not allowed in YAML"
        ) from None
    except yaml.YAMLError as exc:
        raise YAMLError(f"{source}:1:1: {exc}") from None
    except RecursionError:  # a guard only: the depth cap should stop nesting long before this
        raise YAMLError(f"{source}:1:1: nesting too deep") from None


def read_text(path: Any, source: str | None = None) -> str:
    """A regular file's UTF-8 text, at most MAX_BYTES; OSError / YAMLError otherwise.

    Reads a bounded prefix instead of trusting the size the file system reports, so that
    /dev/zero, a FIFO or a file growing under us cannot make the loader read forever.
    """
    import os
    import stat

    source = str(path) if source is None else source
    with open(path, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise OSError(0, "not a regular file")
        data = f.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise YAMLError(f"{source}:1:1: larger than the {MAX_BYTES // 2**20} MiB limit")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, col = where(data[: exc.start].decode("utf-8", errors="replace"), exc.start)
        raise YAMLError(f"{source}:{line}:{col}: not UTF-8 text ({exc.reason})") from None
