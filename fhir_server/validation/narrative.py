"""The XHTML rules of Narrative.div (txt-1, txt-2): FHIRPath's `htmlChecks()`.

Why: a narrative is shown to people in portals; R4 allows only basic, inert XHTML (no
scripts, forms, frames, event attributes or external styles) and demands some content.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from functools import lru_cache

XHTML = "{http://www.w3.org/1999/xhtml}"


_SCRIPT_URL = re.compile(r"(?i)(javascript|vbscript):")


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_ALLOWED = _words(
    "a abbr acronym b big blockquote br caption cite code col colgroup dd dfn div dl dt "
    "em h1 h2 h3 h4 h5 h6 hr i img li ol p pre q samp small span strong sub sup table "
    "tbody td tfoot th thead tr tt ul var"
)
_ATTRIBUTES = _words(
    "abbr accesskey align alt axis bgcolor border cellhalign cellpadding cellspacing "
    "cellvalign char charoff charset cite class colspan compact coords dir frame headers "
    "height href hreflang hspace id lang longdesc name nowrap rel rev rowspan rules "
    "scope shape span src start style summary tabindex title type valign value vspace "
    "width"
)


@lru_cache(maxsize=1024)
def _parse(div: str) -> ET.Element | str:
    try:
        return ET.fromstring(div)
    except ET.ParseError as exc:
        return f"narrative is not well-formed XHTML ({exc})"


def has_content(div: str) -> bool:
    """txt-2: some non-whitespace text, or an image."""
    root = _parse(div)
    if isinstance(root, str):
        return True  # not XHTML at all: txt-1 reports it
    return bool("".join(root.itertext()).strip()) or root.find(f".//{XHTML}img") is not None


@lru_cache(maxsize=1024)
def html_problem(div: str) -> str | None:
    """Why `div` breaks txt-1 (only basic, inert XHTML), or None if it is acceptable."""
    root = _parse(div)
    if isinstance(root, str):
        return root
    if root.tag != XHTML + "div":
        return "narrative must be an XHTML <div> in the namespace http://www.w3.org/1999/xhtml"
    for node in root.iter():
        if not isinstance(node.tag, str) or not node.tag.startswith(XHTML):
            return f"element {node.tag!r} is not XHTML"
        name = node.tag[len(XHTML) :]
        if name not in _ALLOWED:
            return f"element <{name}> is not allowed in narrative"
        for attribute, value in node.attrib.items():
            local = attribute.rsplit("}", 1)[-1]
            if local not in _ATTRIBUTES or _SCRIPT_URL.match(re.sub(r"[\x00-\x20]+", "", value)):
                return f"attribute '{local}' on <{name}> is not allowed in narrative"
    return None
