"""mkdocs hook: links between pages inside the tutorial notebooks.

A notebook links other pages as files (`../findings.md#1`, `../guide/plugins.md`), which works
where the notebook is opened (Jupyter, GitHub). mkdocs rewrites such links in Markdown pages
only; mkdocs-jupyter leaves them raw in the notebook's HTML. This hook rewrites them to the
pages' URLs, and reports a link to a file that is not in the site — or to a heading anchor the
page lacks — as a warning, which `mkdocs build --strict` turns into a failure.
"""

from __future__ import annotations

import logging
import posixpath
import re
from typing import Any

log = logging.getLogger("mkdocs.plugins.notebook_links")

HREF = re.compile(r'href="(?!https?:|mailto:|#|/)([^"#]+\.(?:md|ipynb))(#[^"]*)?"')


def on_page_content(html: str, page: Any, config: Any, files: Any) -> str:
    if not page.file.src_uri.endswith(".ipynb"):
        return html

    def rewrite(match: re.Match[str]) -> str:
        target, anchor = match.group(1), match.group(2) or ""
        path = posixpath.normpath(posixpath.join(posixpath.dirname(page.file.src_uri), target))
        file = files.get_file_from_path(path)
        if file is None:
            log.warning("%s links to '%s', which is not in the site", page.file.src_uri, target)
            return match.group(0)
        return f'href="{file.url_relative_to(page.file)}{anchor}"'

    return HREF.sub(rewrite, html)
