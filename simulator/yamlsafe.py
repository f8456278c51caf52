"""Safe YAML loading: no Python tags, no aliases (a billion-laughs file is under 1 KB)."""

from __future__ import annotations

from typing import Any

import yaml


class YAMLError(ValueError):
    """A YAML file that cannot be parsed; the message has the file, line and column."""


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader that refuses anchors/aliases outright instead of expanding them."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            mark = event.start_mark
            raise yaml.composer.ComposerError(
                None, None, "YAML aliases (*name) are not allowed in scenario files", mark
            )
        return super().compose_node(parent, index)


def load_yaml(text: str, source: str = "<string>") -> Any:
    """Parse YAML text safely; errors name `source` with line and column."""
    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        raise YAMLError(f"{where}: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise YAMLError(f"{source}: {exc}") from None
