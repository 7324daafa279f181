"""The XHTML rules of Narrative.div (txt-1, txt-2): FHIRPath's `htmlChecks()`.

Why: a narrative is shown to people in portals; R4 allows only basic, inert XHTML (no
scripts, forms, frames, event attributes or external styles) and demands some content.

Why the verdict cache looks as it does: the same narrative is validated again and again (on
every update, and txt-1 and txt-2 both ask), so one parse should answer both. A narrative can
be megabytes, though, so the cache keeps only the verdict (a short message and a bool) under
a digest of the div: never the div itself nor its parsed tree, so its size is bounded by
entries, not by what clients send.
"""

from __future__ import annotations

import hashlib
import re
import threading
import xml.etree.ElementTree as ET
from collections import OrderedDict
from typing import NamedTuple

XHTML = "{http://www.w3.org/1999/xhtml}"
CACHE_ENTRIES = 1024
"""About 150 bytes each: a 32-byte digest, a verdict, the LRU links."""

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


class Verdict(NamedTuple):
    problem: str | None  # why the div breaks txt-1, or None
    has_content: bool  # txt-2


def has_content(div: str) -> bool:
    """txt-2: some non-whitespace text, or an image."""
    return _verdict(div).has_content


def html_problem(div: str) -> str | None:
    """Why `div` breaks txt-1 (only basic, inert XHTML), or None if it is acceptable."""
    return _verdict(div).problem


_cache: OrderedDict[bytes, Verdict] = OrderedDict()
_lock = threading.Lock()


def _verdict(div: str) -> Verdict:
    key = hashlib.blake2b(div.encode("utf-8", "surrogatepass"), digest_size=32).digest()
    with _lock:
        found = _cache.get(key)
        if found is not None:
            _cache.move_to_end(key)
            return found
    verdict = _judge(div)
    with _lock:
        _cache[key] = verdict
        while len(_cache) > CACHE_ENTRIES:
            _cache.popitem(last=False)
    return verdict


_FINE, _EMPTY = Verdict(None, True), Verdict(None, False)


def _judge(div: str) -> Verdict:
    """Parse once and answer both rules; the tree is dropped on return.

    The usual verdicts are shared constants: an object made while a large tree is alive
    lands among its freed memory and would keep that memory from going back to the OS."""
    try:
        root = ET.fromstring(div)
    except ET.ParseError as exc:
        # not XHTML at all: txt-1 reports it, txt-2 stays quiet
        return Verdict(f"narrative is not well-formed XHTML ({_short(str(exc))})", True)
    content = any(text.strip() for text in root.itertext())
    content = content or root.find(f".//{XHTML}img") is not None
    problem = _problem(root)
    if problem is None:
        return _FINE if content else _EMPTY
    return Verdict(problem, content)


def _problem(root: ET.Element) -> str | None:
    if root.tag != XHTML + "div":
        return "narrative must be an XHTML <div> in the namespace http://www.w3.org/1999/xhtml"
    for node in root.iter():
        if not isinstance(node.tag, str) or not node.tag.startswith(XHTML):
            return f"element {_short(repr(node.tag))} is not XHTML"
        name = node.tag[len(XHTML) :]
        if name not in _ALLOWED:
            return f"element <{_short(name)}> is not allowed in narrative"
        if not node.attrib:
            continue
        for attribute, value in node.attrib.items():
            local = attribute.rsplit("}", 1)[-1]
            if local not in _ATTRIBUTES or _SCRIPT_URL.match(re.sub(r"[\x00-\x20]+", "", value)):
                return f"attribute '{_short(local)}' on <{name}> is not allowed in narrative"
    return None


def _short(text: str, limit: int = 80) -> str:
    """Names in messages come from the client: a verdict stays small whatever they send."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
