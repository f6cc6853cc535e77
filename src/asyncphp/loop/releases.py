"""Where a release's worker script is on this host: the filesystem side of release-aware jobs.

``worker_script`` names ``{release}``; a job's release fills it in. The path must resolve
(symlinks followed, as php-fpm will) to a file inside ``releases_root``: a release id cannot
reach anything else, whatever links a deploy leaves behind. What was found is kept for a second,
so that a burst of jobs costs one look, not one per job; the resolved path is what the pool is
given, so that what was checked is what runs (a release named by a link, such as ``current``,
runs what the link named when it was looked at).
"""

from __future__ import annotations

import os

PLACEHOLDER = "{release}"
FOUND_FOR = 1.0  # seconds a release found is trusted before it is looked at again


class OutsideRoot(ValueError):
    """The release's script resolves outside releases_root."""


class ReleaseFinder:
    def __init__(self, template: str, root: str) -> None:
        self.template = template
        self.templated = PLACEHOLDER in template
        self._root = os.path.realpath(root) if root else ""
        self._found: dict[str, tuple[str, float]] = {}  # release → (script, until)
        self.seen: set[str] = set()  # releases found here at some point: one gone since was removed

    def locate(self, release: str, now: float) -> str | None:
        """The script of ``release``, resolved; None while it is not on this host.

        Raises:
            OutsideRoot: it resolves outside releases_root (a link out of it).
        """
        cached = self._found.get(release)
        if cached is not None and now < cached[1]:
            return cached[0]
        path = self.template.replace(PLACEHOLDER, release)
        real = os.path.realpath(path)
        if os.path.commonpath([real, self._root]) != self._root or real == self._root:
            raise OutsideRoot(f"release {release}: {path} is {real}, outside releases_root ({self._root})")
        if not os.path.isfile(real):
            self._found.pop(release, None)
            return None
        # The resolved path, not the link: what was checked is what runs.
        self._found[release] = (real, now + FOUND_FOR)
        self.seen.add(release)
        return real

    def forget(self, release: str) -> None:
        """What was found for ``release`` is stale (the pool did not find its script): look again."""
        self._found.pop(release, None)
