"""Route templates as a segment trie: which template a path matches, by dict lookups.

`RouteTable` (guard/routes.py) labels a path with the first of its templates (in order) whose
regex (`routes.compile_template`) matches it. Most templates are plain segments: fixed words and
whole-segment parameters (``/svc07/users/{user}/orders/{order_id:int}``). For those, the regex
``^/svc07/users/[^/]+/orders/[^/]+/?$`` says: the path's segments are the template's, a
parameter standing for any non-empty segment, with one optional trailing slash. A trie of the
segments answers that with one dict lookup per segment (a fixed word) and a branch per parameter,
whatever the number of templates, where the combined regex walks the alternatives one by one.
Where a position has a single fixed word (``/svc07/items``: ``items`` is all that follows
``svc07``), the segment is compared with it in place: no string is cut out and hashed.

`TemplateTrie.match` gives the smallest index of the trie's templates matching a path: the
first in order, as the regex scan finds. Templates the trie cannot express — a parameter inside
a segment (``/files/{name}.txt``), a ``{x:path}`` parameter, a trailing ``*``, a template not
starting with ``/`` — are left to the regex (`fallback`: their indices, in order); the caller
takes the smaller of the two winners. Paths holding a newline go to the regex too (``$``
matches before a final newline). tests/unit/test_routetrie.py pins the trie to the regexes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

#: a template parameter, as `routes._PARAM` reads it
_PARAM: Final = re.compile(r"\{([a-zA-Z_][a-zA-Z0-9_]*)(?::([a-zA-Z_]+))?\}")
#: "no template": larger than any index
NO_MATCH: Final = (1 << 31) - 1  # (a short int: compiled comparisons stay unboxed)
#: a template segment that is a parameter (any non-empty segment)
_ANY: Final = None


class _Node:
    """One segment position: its fixed words, its parameter branch, the templates ending here."""

    __slots__ = ("end", "least", "literals", "param", "word", "word_child")

    def __init__(self) -> None:
        self.literals: dict[str, _Node] = {}
        #: the one fixed word when there is exactly one (and its node): compared in place,
        #: with no segment string made and hashed for a dict lookup
        self.word: str | None = None
        self.word_child: _Node | None = None
        self.param: _Node | None = None
        #: the smallest index of a template ending here (NO_MATCH: none)
        self.end = NO_MATCH
        #: the smallest index of any template at or below this node (prunes the walk)
        self.least = NO_MATCH


def trie_segments(template: str) -> list[str | None] | None:
    """The template's segments (None for a parameter), or None when the trie cannot express it
    (see the module docstring)."""
    if not template.startswith("/") or template.endswith("*"):
        return None
    segments: list[str | None] = []
    for segment in template[1:].split("/"):
        param = _PARAM.search(segment)
        if param is None:
            segments.append(segment)
        elif param.start() == 0 and param.end() == len(segment) and param.group(2) != "path":
            segments.append(_ANY)
        else:
            return None  # a parameter inside a segment, or one matching several segments
    return segments


class TemplateTrie:
    """The expressible templates of a list, as a trie (see the module docstring)."""

    def __init__(self, templates: Sequence[str]) -> None:
        self._root = _Node()
        #: indices (in order) of the templates left to the regex
        self.fallback: list[int] = []
        for index, template in enumerate(templates):
            segments = trie_segments(template)
            if segments is None:
                self.fallback.append(index)
                continue
            node = self._root
            node.least = min(node.least, index)
            for segment in segments:
                if segment is None:
                    child = node.param
                    if child is None:
                        child = node.param = _Node()
                else:
                    child = node.literals.get(segment)
                    if child is None:
                        child = node.literals[segment] = _Node()
                node = child
                node.least = min(node.least, index)
            node.end = min(node.end, index)
        _single_words(self._root)

    def match(self, path: str) -> int:
        """The smallest index of a trie template matching `path` (which starts with ``/`` and
        holds no newline), or NO_MATCH."""
        count = len(path)
        best = _walk(self._root, path, 1, count, NO_MATCH)
        if count > 1 and path[count - 1] == "/":
            # the optional trailing slash: the path's segments but the last, empty one
            best = _walk(self._root, path, 1, count - 1, best)
        return best


def _single_words(root: _Node) -> None:
    """Give every node with exactly one fixed word its `word` and `word_child`."""
    stack = [root]
    while stack:
        node = stack.pop()
        if len(node.literals) == 1:
            for word, child in node.literals.items():
                node.word, node.word_child = word, child
        stack.extend(node.literals.values())
        if node.param is not None:
            stack.append(node.param)


def _walk(node: _Node, path: str, i: int, end: int, best: int) -> int:
    """The smallest template index below `node` matching the segments of path[i:end] (split at
    "/", no string made but for fixed words), or `best` if none is smaller."""
    while True:
        if node.least >= best:
            return best
        if i > end:  # past the last segment
            return node.end if node.end < best else best
        stop = path.find("/", i, end)
        if stop < 0:
            stop = end
        word = node.word
        if word is not None:  # (the segment is the word: as long, and found where it starts)
            matched = stop - i == len(word) and path.find(word, i, stop) == i
            child = node.word_child if matched else None
        else:
            literals = node.literals
            child = literals.get(path[i:stop]) if literals else None
        param = node.param
        if param is None or stop == i:  # (a parameter is never empty)
            if child is None:
                return best
            node = child  # one way on: no recursion
        elif child is None:
            node = param
        else:
            best = _walk(child, path, stop + 1, end, best)
            node = param
        i = stop + 1
