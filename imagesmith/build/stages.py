"""The stage loop: restore the last stage the cache holds, run every later one.

Each stage's lock (one per cache key) is taken from the last stage down until a cached
one is found, and each is let go once its stage has run and been saved: a second build
of the same config waits for the first and then takes its result from the cache, and
two builds that share only a bootstrap share it.
"""

from __future__ import annotations

from concurrent.futures import Future
from contextlib import AbstractContextManager, ExitStack, nullcontext, suppress
from pathlib import Path

from imagesmith.cache import META, Cache, Entry
from imagesmith.cache.store import DamagedEntry
from imagesmith.host.rootfs import copy_tree
from imagesmith.stages.base import Stage
from imagesmith.stages.context import Context
from imagesmith.stages.pipeline import NAMES, STAGES
from imagesmith.stages.plan import StagePlan


class Stages:
    """Runs each stage, or takes its result from the cache when its key is there."""

    def __init__(self, ctx: Context, cache: Cache | None, plans: list[StagePlan], rebuild_from: str | None):
        self.ctx, self.cache = ctx, cache
        self.plans = {p.name: p for p in plans}
        first_forced = NAMES.index(rebuild_from) if rebuild_from else len(NAMES)
        self.forced = set(NAMES[first_forced:])
        #: entries being hashed and renamed into place while the next stage runs
        self.placing: list[tuple[Stage, Future[Entry]]] = []
        #: entries restored from the cache, being checked while the build goes on
        self.checking: dict[tuple[str, str], tuple[Entry, Future[str | None]]] = {}
        self.pulled: set[tuple[str, str]] = set()  # checked as they came from the shared cache
        self.locks: dict[str, ExitStack] = {}

    def cached(self, stage: str, parts: frozenset[str] | None = None) -> Entry | None:
        """The stage's cache entry, checked against the digest it was made with (``parts``:
        only the top-level names of it the build reads)."""
        if self.cache is None or stage in self.forced:
            return None
        key = self.plans[stage].key
        entry = self.cache.checked(stage, key, self.warn, parts)
        if entry is None and self.cache.remote is not None:  # the shared cache behind this one
            entry = self.cache.remote.pull(self.cache, stage, key, self.ctx.runner)
        return entry

    def found(self, stage: str) -> Entry | None:
        """The stage's cache entry, not checked yet (``check``), or pulled from the shared
        cache (checked as it came)."""
        if self.cache is None or stage in self.forced:
            return None
        key = self.plans[stage].key
        entry = self.cache.lookup(stage, key)
        if entry is None and self.cache.remote is not None:
            entry = self.cache.remote.pull(self.cache, stage, key, self.ctx.runner)
            if entry is not None:
                self.pulled.add((stage, key))
        return entry

    def check(self, entry: Entry, parts: frozenset[str] | None) -> None:
        """``entry`` checked against the digest it was made with, in a thread, while the
        build uses it: nothing made from it is committed, and the build does not end,
        before the answer (``verified``)."""
        assert self.cache is not None
        if (entry.stage, entry.key) not in self.checking and (entry.stage, entry.key) not in self.pulled:
            self.checking[(entry.stage, entry.key)] = (entry, self.cache.check_in_background(entry, parts))

    def verified(self) -> None:
        """Wait for the entries being checked; a damaged one stops the build
        (``DamagedEntry``: it is discarded and the build starts again)."""
        for key, (entry, damage) in list(self.checking.items()):
            why = damage.result()
            del self.checking[key]
            if why is not None:
                raise DamagedEntry(entry, why)

    def warn(self, text: str) -> None:
        self.ctx.runner.note(text)

    def commit(self, stage: Stage) -> bool:
        """``stage``'s result saved as its cache entry; False: it is being placed in the
        background (``Stage.commit_in_background``), and its lock is let go once it is."""
        if self.cache is None:
            return True
        self.verified()  # never an entry made from a damaged one
        self.placed()  # an earlier stage's entry first
        # the config that made it counts as its first user (`cache list`, pruning)
        plan, config = self.plans[stage.name], str(self.ctx.spec.config_path)
        info: dict[str, object] = {"inputs": plan.inputs, "configs": [config]}

        def make(entry_dir: Path) -> None:
            info.update(stage.save(self.ctx, entry_dir))

        # a stage run again on purpose (--rebuild-from, a re-lock) replaces its entry
        replace = stage.name in self.forced
        parts = stage.parts_read
        if stage.commit_in_background:
            self.placing.append(
                (stage, self.cache.commit_in_background(stage.name, plan.key, make, info, replace, parts))
            )
            return False
        entry = self.cache.commit(stage.name, plan.key, make, info, replace=replace, parts=parts)
        stage.committed(self.ctx, entry)
        return True

    def placed(self) -> None:
        """Wait for the entries being placed in the background; each stage's lock goes then."""
        while self.placing:
            stage, entry = self.placing.pop(0)
            stage.committed(self.ctx, entry.result())
            self.locks[stage.name].close()

    def commit_copy(self, stage: str, entry: Entry) -> None:
        """``entry``'s content (made under another key) kept under this build's key too."""
        if self.cache is None:
            return
        plan, config = self.plans[stage], str(self.ctx.spec.config_path)

        def make(entry_dir: Path) -> None:
            for part in sorted(entry.path.iterdir()):
                if part.name != META:
                    copy_tree(self.ctx.runner, part, entry_dir / part.name)

        self.cache.commit(stage, plan.key, make, {"inputs": plan.inputs, "configs": [config]})

    def run(self, stages: tuple[Stage, ...] = STAGES) -> None:
        """Every stage's result in ``ctx``: the latest cached one restored, the rest run.
        Stages in ``ctx.done`` (the bootstrap of a re-lock) are neither restored nor run."""
        ctx, runner = self.ctx, self.ctx.runner
        done = max((i for i, s in enumerate(stages) if s.name in ctx.done), default=-1)
        locks = self.locks = {stage.name: ExitStack() for stage in stages}
        try:
            start = done + 1
            for index in range(len(stages) - 1, done, -1):
                stage = stages[index]
                locks[stage.name].enter_context(self._lock(stage.name))
                if stage.resumable and self._restore(stage):
                    locks[stage.name].close()
                    start = index + 1
                    break
            for index, stage in enumerate(stages[start:], start):
                if index + 1 < len(stages):
                    stages[index + 1].prepare(ctx)  # while this one runs
                stage.check(ctx)
                with runner.stage(stage.name, stage.title(ctx)):
                    stage.run(ctx)
                    committed = self.commit(stage)
                if committed:
                    locks[stage.name].close()
            self.placed()
            self.verified()
        except Exception:  # not an interrupt: that stops the build, damaged entry or not
            self.verified()  # a damaged entry the build used explains the failure best
            raise
        finally:
            for _, entry in self.placing:  # the build failed meanwhile: still no half entry
                with suppress(BaseException):
                    entry.result()
            self.placing.clear()
            for held in locks.values():
                held.close()

    def _restore(self, stage: Stage) -> bool:
        """``stage`` taken from the cache, with the entries it restores with."""
        names = (stage.name, *stage.restore_with)
        entries = {name: self.found(name) for name in names}
        found = {name: entry for name, entry in entries.items() if entry is not None}
        if len(found) != len(names):
            return False
        for name, entry in found.items():
            self.check(entry, stage.reads(self.ctx, name))
        with self.ctx.runner.stage(stage.name, "from the cache"):
            if not stage.restore(self.ctx, found):
                self.verified()  # a damaged entry, rather than this one
                # the outputs must describe the bytes written, not what the cache said
                self.warn(f"the {stage.name} stage put together from the cache is not the one its entry "
                          "recorded: the entry is discarded and the stage runs again")  # fmt: skip
                assert self.cache is not None
                self.cache.remove(found[stage.name])
                return False
            if self.cache is not None:
                for entry in found.values():
                    self.cache.touch(entry, str(self.ctx.spec.config_path))
        return True

    def _lock(self, stage: str) -> AbstractContextManager[object]:
        if self.cache is None:
            return nullcontext()
        return self.cache.lock(stage, self.plans[stage].key)
