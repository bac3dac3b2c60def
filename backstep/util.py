"""The one iterative walk over expression trees and graphs (deep ones must not overflow the stack)."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import TypeVar

T = TypeVar("T", bound=Hashable)


def postorder(root: T, children: Callable[[T], Sequence[T]], done: Callable[[T], bool]) -> Iterator[T]:
    """Every node under `root` after its children, each once; a node for which `done` is true (the
    caller has its value already) is neither yielded nor entered. The caller records each node it
    gets before asking for the next, so that `done` sees it."""
    stack: list[tuple[T, bool]] = [(root, False)]
    while stack:
        node, ready = stack.pop()
        if done(node):
            continue
        kids = children(node)
        if ready or not kids:
            yield node
            continue
        stack.append((node, True))
        stack.extend((k, False) for k in kids if not done(k))


def reachable(start: T, neighbours: Callable[[T], Sequence[T]], key: Callable[[T], Hashable] = id) -> set:
    """The keys of `start` and of every node reachable from it along `neighbours`."""
    seen: set = set()
    stack = [start]
    while stack:
        node = stack.pop()
        k = key(node)
        if k in seen:
            continue
        seen.add(k)
        stack.extend(neighbours(node))
    return seen
