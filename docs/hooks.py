"""MkDocs hooks (`hooks:` in mkdocs.yml): the README is the site's home page, and links to
repository files outside docs/ are checked here and written as paths, since the site holds only docs/.

The README links pages as `docs/x.md` (right on GitHub and PyPI); on the site it sits at the top,
so those links lose their `docs/` prefix. A link to a file that does not exist fails the build.
"""
from __future__ import annotations

import posixpath
import re
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

REPO = Path(__file__).resolve().parent.parent
HOME = "index.md"
_LINK = re.compile(r"(!?)\[([^\]\n]*)\]\(([^)\s]+)\)")
_FENCE = re.compile(r"(^```.*?^```[ \t]*$)", re.M | re.S)
_CODE_SPAN = re.compile(r"`[^`\n]*`")
_EXTERNAL = re.compile(r"^([a-z][a-z0-9+.-]*:|#)")


def on_files(files, config):
    files.append(File.generated(config, HOME, abs_src_path=str(REPO / "README.md")))
    return files


def on_page_markdown(markdown, page, config, files):
    docs_dir = Path(config["docs_dir"]).resolve()
    source_dir = REPO if page.file.src_uri == HOME else (docs_dir / page.file.src_uri).parent
    page_dir = posixpath.dirname(page.file.src_uri)

    def rewrite(match, spans):
        image, text, target = match.groups()
        if _EXTERNAL.match(target) or any(a <= match.start() < b for a, b in spans):
            return match.group(0)
        path, hash_, anchor = target.partition("#")
        full = (source_dir / path).resolve()
        if not full.exists():
            raise PluginError(f"{page.file.src_uri}: the link {target!r} names a file that does not exist")
        if full.is_relative_to(docs_dir):
            new = posixpath.relpath(full.relative_to(docs_dir).as_posix(), page_dir or ".")
            return f"{image}[{text}]({new}{hash_}{anchor})"
        if image:
            raise PluginError(f"{page.file.src_uri}: the image {target!r} is outside docs/, so not on the site")
        in_repo = full.relative_to(REPO).as_posix()
        return text if in_repo in text else f"{text} (`{in_repo}`)"

    def rewrite_prose(text):
        spans = [m.span() for m in _CODE_SPAN.finditer(text)]
        return _LINK.sub(lambda match: rewrite(match, spans), text)

    # Code is left alone: `f["metadata"](unused=...)` is Python there, not a link.
    parts = _FENCE.split(markdown)
    return "".join(part if i % 2 else rewrite_prose(part) for i, part in enumerate(parts))
